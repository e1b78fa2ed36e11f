"""What `alexnet prepare` is asked to do: `PrepareConfig`, each option defined once
(the command line builds its flags from these fields). Importable without torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import STORE_FORMATS, option

STORE_SIZE = 256  # §2: shorter side to 256, then the central 256x256 patch
SHARD_SIZE = 1024


@dataclass
class PrepareConfig:
    """What `alexnet prepare` is asked to do; each field is also its flag."""

    src: str = option(
        help="image folder (class sub-folders), ILSVRC-2012 (extracted, or the folder of its "
        "archives), MNIST / Fashion-MNIST idx files or CIFAR-10/100 python batches"
    )
    out: str = option(help="the store directory to create")
    val_src: str | None = option(
        None, "validation images (class sub-folders or flat)", flag="--val", metavar="DIR"
    )
    val_labels: str | None = option(None, "labels of a flat validation folder", metavar="FILE")
    class_names: str | None = option(
        None, "synset mapping file (wnid name) for human names", metavar="FILE"
    )
    val_fraction: float = option(0.1, "held out per class when there is no --val")
    workers: int = option(0, "worker processes (0: one per core)")
    size: int = option(STORE_SIZE, "side of the stored square images")
    format: str = option(
        "auto", "raw uint8 arrays, or JPEG shards (auto: raw below 8 GiB)", STORE_FORMATS
    )
    shard_size: int = option(SHARD_SIZE, "images per shard")
    seed: int = option(0, "seeds the validation hold-out")
    overwrite: bool = option(False, "replace an existing store (only a store)")
    progress: bool = option(True, "progress bar", cli=False)
