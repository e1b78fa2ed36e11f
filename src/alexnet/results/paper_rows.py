"""The paper's result rows (Tables 1 and 2, docs/paper.md §6) and the later public
reference points, and which of them an evaluation can be set beside: the same dataset,
split, test views and number of nets, and a six-conv net where the row's has one."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PaperRow:
    source: str  # "Table 1", "Table 2", or who published a later figure
    model: str
    dataset: str  # "ILSVRC-2010" or "ILSVRC-2012"
    split: str
    crops: int
    nets: int
    top1_error: float | None  # Table 2 gives no top-1 on ILSVRC-2012 test
    top5_error: float
    six_conv: bool = False  # the "*" rows: a sixth convolutional layer, pre-trained

    def as_dict(self) -> dict:
        return asdict(self)


ROWS = (
    PaperRow("Table 1", "1 CNN", "ILSVRC-2010", "test", 10, 1, 0.375, 0.170),
    # the footnote to Table 1: the same net without the ten-patch average
    PaperRow("Table 1", "1 CNN", "ILSVRC-2010", "test", 1, 1, 0.390, 0.183),
    PaperRow("Table 2", "1 CNN", "ILSVRC-2012", "val", 10, 1, 0.407, 0.182),
    PaperRow("Table 2", "5 CNNs", "ILSVRC-2012", "val", 10, 5, 0.381, 0.164),
    PaperRow("Table 2", "5 CNNs", "ILSVRC-2012", "test", 10, 5, None, 0.164),
    PaperRow("Table 2", "1 CNN*", "ILSVRC-2012", "val", 10, 1, 0.390, 0.166, six_conv=True),
    PaperRow("Table 2", "7 CNNs*", "ILSVRC-2012", "val", 10, 7, 0.367, 0.154, six_conv=True),
    PaperRow("Table 2", "7 CNNs*", "ILSVRC-2012", "test", 10, 7, None, 0.153, six_conv=True),
    PaperRow("cuda-convnet2", "one-GPU net, 90 epochs", "ILSVRC-2012", "val", 1, 1, 0.425, 0.198),
    PaperRow("cuda-convnet2", "one-GPU net, 90 epochs", "ILSVRC-2012", "val", 10, 1, 0.404, 0.182),
    PaperRow("Caffe", "bvlc_alexnet", "ILSVRC-2012", "val", 1, 1, 0.429, 0.198),
    PaperRow("torchvision", "alexnet", "ILSVRC-2012", "val", 1, 1, 0.43478, 0.20934),
)


def store_dataset(store) -> str | None:
    """Which ILSVRC a store holds, where that can be known: ILSVRC-2010 from its
    archives, ILSVRC-2012 from its classes (exactly the 1,000 wnids of ILSVRC-2012)."""
    if store.meta.get("source_kind") == "ilsvrc2010-archives":
        return "ILSVRC-2010"
    if store.num_classes != 1000:
        return None
    from ..data.imagenet import imagenet_classes
    from ..data.store import class_ids

    return "ILSVRC-2012" if class_ids(store.classes) == class_ids(imagenet_classes()) else None


def matching_rows(
    dataset: str | None, split: str, crops: int, variants: list[str]
) -> list[PaperRow]:
    """The rows an evaluation of nets of these variants on (dataset, split) with this
    many test views stands beside; none where the dataset is not an ILSVRC one."""
    six_conv = "six-conv" in variants
    return [
        r
        for r in ROWS
        if (r.dataset, r.split, r.crops, r.nets) == (dataset, split, crops, len(variants))
        and r.six_conv == six_conv
    ]
