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


def imagenet_indices(classes: list[dict]) -> list[int] | None:
    """The output index of each class of a class list ({"id", "name"} entries) among
    ILSVRC-2012's 1,000, when every one is an ILSVRC-2012 wnid or a short name that
    belongs to exactly one class (Imagenette, ImageNet-100, a lab's own synsets); None
    when one is not, or when two name the same class."""
    wnids = {w: i for i, (w, _, _) in enumerate(_rows())}
    by_name: dict[str, list[int]] = {}
    for i, (_, name, _) in enumerate(_rows()):
        by_name.setdefault(name.lower(), []).append(i)
    out = []
    for c in classes:
        for key in (str(c.get("id", "")), str(c.get("name", ""))):
            if key in wnids:
                out.append(wnids[key])
                break
            if len(by_name.get(key.lower(), [])) == 1:
                out.append(by_name[key.lower()][0])
                break
        else:
            return None
    return out if len(set(out)) == len(out) else None
