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

BASE_URL_ENV = "ALEXNET_WEIGHTS_URL"
TIMEOUT_S = 30.0  # per blocking read: a server that never answers fails, never hangs
CHUNK = 1 << 20
LOG_EVERY_S = 5.0


@dataclass(frozen=True)
class NamedWeights:
    """One published weights file: where it is, what it is, and how to check it."""

    name: str
    file_name: str
    url: str
    hash_kind: str  # "sha256-prefix" (torchvision's convention) or "sha1"
    digest: str
    size_mb: int  # as published, for the README and the messages
    description: str

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


NAMED = {
    "torchvision": NamedWeights(
        "torchvision",
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "sha256-prefix",
        "7be5be79",
        233,
        "torchvision's AlexNet (the one-weird-trick layout), ILSVRC-2012",
    ),
    "caffe": NamedWeights(
        "caffe",
        "bvlc_alexnet.caffemodel",
        "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
        "sha1",
        "9116a64c0fbe4459d18f4bb6b56d647b63920377",
        233,
        "Caffe's bvlc_alexnet (the paper's two-tower layout), ILSVRC-2012",
    ),
}


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
