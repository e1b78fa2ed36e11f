"""Published ImageNet weights by name, as torch.hub keeps them.

`torchvision` and `caffe` name the two public ImageNet-trained AlexNets. A name
resolves to torch.hub's cache, `$TORCH_HOME/hub/checkpoints/<the published file name>`
(torch.hub.get_dir()); a file found there is trusted, as torch.hub trusts it. A file
not there is downloaded from its published URL on first use: through a temp file in
the same folder, renamed only after its published hash (the sha256 prefix in
torchvision's file name, the SHA1 of Caffe's readme) matched, with a bounded timeout,
a progress bar on a terminal and log lines without one.

ALEXNET_WEIGHTS_URL replaces the base of every URL (a mirror, or a test's loopback
server): the file name is appended to it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..runtime.errors import UsageError
from ..runtime.printed import Printed

BASE_URL_ENV = "ALEXNET_WEIGHTS_URL"
TIMEOUT_S = 30.0  # per blocking read: a server that never answers fails, never hangs
CHUNK = 1 << 20
LOG_EVERY_S = 5.0


@dataclass(frozen=True)
class NamedWeights:
    """One published weights file: where it is, what it is, how to check it, and what
    it was measured to do (the registry `alexnet.list_weights()` and `info --weights`)."""

    name: str
    file_name: str
    url: str
    hash_kind: str  # "sha256-prefix" (torchvision's convention) or "sha1"
    digest: str
    size_mb: int  # as published, for the README and the messages
    description: str
    variant: str  # the net it fills (docs/paper.md)
    params: int  # learned parameters
    metrics: dict  # as published: top-1 / top-5 accuracy in %
    protocol: str  # how they were measured: split, crops
    min_size: int  # the smallest square input the net computes an output for
    channels: str  # the input's channel order: "rgb" or "bgr"
    recipe: str  # how the weights were trained, with where it is written
    docs: str  # this project's page on them

    @property
    def download_url(self) -> str:
        """The URL, with its base replaced when ALEXNET_WEIGHTS_URL is set."""
        base = os.environ.get(BASE_URL_ENV)
        return f"{base.rstrip('/')}/{self.file_name}" if base else self.url

    def matches(self, path: Path) -> bool:
        """Whether the file's bytes have the published hash."""
        h = hashlib.sha256() if self.hash_kind == "sha256-prefix" else hashlib.sha1()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                h.update(block)
        return h.hexdigest().startswith(self.digest)

    def meta(self) -> dict:
        """Everything the registry says of these weights, as plain values."""
        return {
            "name": self.name,
            "description": self.description,
            "variant": self.variant,
            "num_params": self.params,
            "metrics": dict(self.metrics),
            "protocol": self.protocol,
            "file_name": self.file_name,
            "file_size_mb": self.size_mb,
            "hash": f"{self.hash_kind}:{self.digest}",
            "url": self.url,
            "min_size": self.min_size,
            "channels": self.channels,
            "num_classes": 1000,
            "recipe": self.recipe,
            "docs": self.docs,
        }


NAMED = {
    "torchvision": NamedWeights(
        "torchvision",
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "sha256-prefix",
        "7be5be79",
        233,
        "torchvision's AlexNet (the one-weird-trick layout), ILSVRC-2012",
        variant="torchvision",
        params=61_100_840,
        metrics={"top1_accuracy": 56.522, "top5_accuracy": 79.066},
        protocol="ILSVRC-2012 val, 50,000 images, one centre crop of 224 after resizing the "
        "shorter side to 256 (torchvision's AlexNet_Weights.IMAGENET1K_V1)",
        min_size=63,
        channels="rgb",
        recipe="torchvision's references/classification: SGD lr 0.01, momentum 0.9, weight "
        "decay 1e-4, x0.1 every 30 epochs, 90 epochs (the `torchvision` recipe)",
        docs="README.md#pretrained-weights",
    ),
    "caffe": NamedWeights(
        "caffe",
        "bvlc_alexnet.caffemodel",
        "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
        "sha1",
        "9116a64c0fbe4459d18f4bb6b56d647b63920377",
        233,
        "Caffe's bvlc_alexnet (the paper's two-tower layout), ILSVRC-2012",
        variant="caffe",
        params=60_965_224,
        metrics={"top1_accuracy": 57.1, "top5_accuracy": 80.2},
        protocol="ILSVRC-2012 val, one centre crop of 227 (bvlc_alexnet's readme)",
        min_size=39,
        channels="bgr",
        recipe="Caffe's models/bvlc_alexnet solver: SGD lr 0.01, momentum 0.9, weight decay "
        "5e-4, x0.1 every 100,000 iterations, 450,000 iterations; biases 0.1 (the "
        "`caffe-init` recipe's init)",
        docs="docs/paper.md#caffes-alexnet-the-caffe-variant",
    ),
}


def list_weights() -> list[dict]:
    """`alexnet.list_weights()`: every published net this package loads by name, with
    what the registry knows of it (NamedWeights.meta)."""
    return [w.meta() for w in NAMED.values()]


def format_weights(entries: list[dict]) -> str:
    """list_weights' entries as the text `alexnet info --weights` prints."""
    blocks = []
    for w in entries:
        m = w["metrics"]
        blocks.append(
            "\n".join(
                [
                    f"{w['name']}: {w['description']}",
                    f"  variant {w['variant']}, {w['num_params']:,} parameters, "
                    f"{w['num_classes']} classes, inputs {w['channels'].upper()} of at least "
                    f"{w['min_size']}x{w['min_size']}",
                    f"  top-1 {m['top1_accuracy']}%, top-5 {m['top5_accuracy']}% accuracy: "
                    f"{w['protocol']}",
                    f"  trained: {w['recipe']}",
                    f"  file {w['file_name']} ({w['file_size_mb']} MB, {w['hash']}), {w['url']}",
                    f"  docs: {w['docs']}",
                ]
            )
        )
    return "\n\n".join(blocks)


def hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder: $TORCH_HOME/hub/checkpoints."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve(spec: str | Path, log=None) -> Path:
    """A weights argument -> a file on disk: a name is looked up (and downloaded once),
    anything else is a path, returned as it is."""
    if str(spec) not in NAMED:
        return Path(spec)
    w = NAMED[str(spec)]
    path = hub_checkpoints() / w.file_name
    if path.is_file():
        return path
    download(w, path, log or _stderr_log)
    return path


def _stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def download(w: NamedWeights, path: Path, log) -> None:
    """Fetch `w` to `path` whole and checked, or leave nothing there; UsageError else."""
    url = w.download_url
    offline = (
        f"{w.name} weights: {w.file_name} is not in {path.parent} and could not be "
        f"downloaded from {url}"
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{offline} ({e.strerror}: cannot make {path.parent})") from None
    tmp = path.parent / f".{w.file_name}.{os.getpid()}.part"
    log(f"downloading {w.name} weights ({w.size_mb} MB) from {url} to {path}")
    try:
        _fetch(url, tmp, log)
        if not w.matches(tmp):
            raise UsageError(
                f"{w.name} weights downloaded from {url} do not have the published "
                f"{w.hash_kind} {w.digest}: nothing was kept; try again, or put the "
                f"file in {path.parent} yourself"
            )
        os.replace(tmp, path)
    except UsageError:
        raise
    except urllib.error.HTTPError as e:
        raise UsageError(f"{offline} (HTTP {e.code} {e.reason}); put it there yourself") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise UsageError(f"{offline} ({reason}); put it there yourself") from None
    except Exception as e:  # http.client's IncompleteRead and its kin: a broken transfer
        raise UsageError(f"{offline} ({type(e).__name__}); put it there yourself") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    log(f"saved {path}")


def _fetch(url: str, tmp: Path, log) -> None:
    """The body of `url` into `tmp`; a short body (against Content-Length) is an error."""
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r, open(tmp, "wb") as out:
        total = int(r.headers.get("Content-Length") or 0) or None
        bar = tqdm(total=total, unit="B", unit_scale=True, disable=not sys.stderr.isatty())
        got, last = 0, time.monotonic()
        with bar:
            for block in iter(lambda: r.read(CHUNK), b""):
                out.write(block)
                got += len(block)
                bar.update(len(block))
                if bar.disable and time.monotonic() - last >= LOG_EVERY_S:
                    last = time.monotonic()
                    log(f"  {got / 1e6:.0f} MB" + (f" of {total / 1e6:.0f} MB" if total else ""))
        if total is not None and got != total:
            raise ValueError(f"the transfer ended after {got} of {total} bytes")


def info_command(cfg) -> Printed:
    """`alexnet info` (cfg: InfoConfig): a variant's layer table, or the weights by name."""
    from ..model.info import format_info, model_info

    if cfg.weights:
        known = list_weights()
        return Printed(known, [format_weights(known)])
    info = model_info(cfg.variant, cfg.input_size, cfg.num_classes)
    return Printed(info, [format_info(info)])
