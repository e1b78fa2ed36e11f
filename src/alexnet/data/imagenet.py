"""ILSVRC-2012's 1,000 classes, in the order every ImageNet-trained AlexNet scores them
(the sorted wnids): index, wnid, short name and WordNet words, shipped with the package
(imagenet_classes.tsv: the wnids and words of the devkit's synsets, the short names
torchvision gives its weights' categories)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _rows() -> tuple[tuple[str, str, str], ...]:
    text = resources.files(__package__).joinpath("imagenet_classes.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return tuple((wnid, name, words) for _, wnid, name, words in rows)


def imagenet_classes() -> list[dict]:
    """[{"index", "id" (the wnid), "name"}] as a checkpoint records its classes."""
    return [{"index": i, "id": w, "name": n} for i, (w, n, _) in enumerate(_rows())]


def imagenet_wnids() -> list[str]:
    """The 1,000 wnids, by output index."""
    return [w for w, _, _ in _rows()]
