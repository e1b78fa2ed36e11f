"""The base of every benchmark's result: its JSON and its printed lines. No torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class BenchResult:
    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def lines(self) -> list[str]:
        raise NotImplementedError
