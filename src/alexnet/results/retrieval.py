"""Nearest neighbours in the 4096-d last hidden layer (§6.1, Figure 4 right), and the
short binary codes the paper proposed for searching them quickly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.folders import store_for
from ..data.store import ALL_SPLITS, Store, StoreSplit, is_store
from ..evaluation.embed import split_features
from ..runtime.device import autocast, precision_name
from ..runtime.errors import UsageError
from ..runtime.files import atomic_save_npy, cache_dir, check_output_file
from ..runtime.printed import Printed
from ..weights.load import Loaded


def checkpoint_key(path: str | Path) -> str:
    """A short hash of a checkpoint file's bytes: the feature cache's key."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


@torch.no_grad()
def features(loaded: Loaded, images_u8: torch.Tensor) -> torch.Tensor:
    """fc7 features of stored uint8 images (centre crop)."""
    device = loaded.device
    transform = loaded.transform(device)
    x = transform(images_u8, transform.views(len(images_u8)))
    with autocast(device, loaded.amp):
        return loaded.model.last_hidden(x).float().cpu()


def feature_cache_path(loaded: Loaded, store: Store, split: str) -> Path:
    """Under the user's cache directory, keyed by the store (its path and meta.json) and
    the checkpoint's bytes: a store may be read-only, and is never written to."""
    h = hashlib.sha256(str(store.root.resolve()).encode())
    h.update((store.root / "meta.json").read_bytes())
    precision = precision_name(loaded.amp)  # features in another precision are others
    name = f"{h.hexdigest()[:16]}-{checkpoint_key(loaded.path)}-{split}-{precision}.npy"
    return cache_dir() / "features" / name


def gallery_features(
    loaded: Loaded, store: Store, split: str = "train", batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """(N, 4096) float32 for a whole split, computed once and cached (when the cache
    directory is writable; otherwise computed each time)."""
    cache = feature_cache_path(loaded, store, split)
    n = len(store.split(split))
    if cache.is_file():
        try:
            feats = np.load(cache, allow_pickle=False)
            if feats.shape[0] == n:
                return feats
        except (OSError, ValueError):
            pass  # a damaged cache entry: computed again below
    feats = split_features(
        loaded.model, store.split(split), loaded.transform(), batch_size, progress, loaded.amp
    )
    feats = feats[0].cpu().numpy()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(cache, feats)
    except OSError:
        pass  # no writable cache: the features are simply not kept
    return feats


def nearest(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean k-NN as batched matrix products: |q|^2 + |g|^2 - 2 q.g, chunked over the gallery."""
    k = min(k, len(gallery))
    q2 = (queries * queries).sum(1, keepdim=True)
    best_d = torch.full((len(queries), 0), float("inf"))
    best_i = torch.zeros((len(queries), 0), dtype=torch.long)
    for start in range(0, len(gallery), chunk):
        g = gallery[start : start + chunk]
        d = (q2 + (g * g).sum(1)[None] - 2 * queries @ g.T).clamp_min(0)
        d, i = (
            torch.cat([best_d, d], 1),
            torch.cat([best_i, torch.arange(start, start + len(g)).expand(len(queries), -1)], 1),
        )  # noqa: E501
        best_d, pos = d.topk(min(k, d.shape[1]), dim=1, largest=False)
        best_i = i.gather(1, pos)
    return best_d.sqrt(), best_i


class CodeAutoencoder(nn.Module):
    """4096 -> 1024 -> BITS (sigmoid) -> 1024 -> 4096; codes are the bits thresholded at 0.5."""

    def __init__(self, bits: int, dim: int = 4096, hidden: int = 1024, input_scale: float = 1.0):
        super().__init__()
        self.input_scale = input_scale  # features are divided by it first
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, bits))
        self.decoder = nn.Sequential(nn.Linear(bits, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x):
        z = torch.sigmoid(self.encoder(x))
        return self.decoder(z), z

    @torch.no_grad()
    def codes(self, features: torch.Tensor) -> torch.Tensor:
        """The binary code of each feature vector: its encoder units rounded."""
        return torch.sigmoid(self.encoder(features / self.input_scale)) > 0.5


def train_codes(feats: torch.Tensor, bits: int, epochs: int = 30, seed: int = 0) -> CodeAutoencoder:
    """The binary-code auto-encoder §6.1 proposes, trained on fc7 features."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    scale = float(feats.std().clamp_min(1e-6))
    x = feats / scale
    ae = CodeAutoencoder(bits, dim=feats.shape[1], input_scale=scale)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(128):
            recon, z = ae(x[idx])
            # the small push of z towards 0/1 makes thresholding lose little
            loss = nn.functional.mse_loss(recon, x[idx]) + 0.01 * (z * (1 - z)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return ae


def hamming_nearest(q: torch.Tensor, g: torch.Tensor, k: int) -> torch.Tensor:
    """k nearest codes by Hamming distance, as one matrix product of +-1 codes."""
    qs, gs = q.float() * 2 - 1, g.float() * 2 - 1
    dist = (q.shape[1] - qs @ gs.T) / 2
    return dist.topk(min(k, len(g)), dim=1, largest=False).indices


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean fraction of each row of `a` found in the same row of `b` (top-k overlap)."""
    hits = [len(set(x) & set(y)) / len(x) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    return float(np.mean(hits))


MAX_K = 100  # neighbours drawn per query: a figure row, not a database dump
MAX_CODE_BITS = 1024  # the paper proposes *short* codes; fc7 has 4096 values


def _query_images(paths: list[str], size: int) -> np.ndarray:
    """Every query decoded before any gallery work: a bad one fails at once, named."""
    from ..data.images import BadImage, load_for_store

    images = []
    for p in paths:
        try:
            images.append(load_for_store(p, size))
        except BadImage as e:
            raise UsageError(f"query {p}: {e}") from None
    return np.stack(images)


def neighbors(
    ckpt: str,
    gallery: str,
    queries: list[str],
    k: int = 5,
    split: str = "train",
    out: str | None = None,
    codes: int | None = None,
    device="cpu",
    progress: bool = False,
    precision: str = "fp32",
) -> dict:
    """The `alexnet neighbors` command as a function: search, optionally codes, figure."""
    from ..weights.load import load_for_inference

    if not 1 <= k <= MAX_K:
        raise UsageError(f"--k must be between 1 and {MAX_K}, not {k}")
    if codes is not None and not 1 <= codes <= MAX_CODE_BITS:
        raise UsageError(f"--codes must be between 1 and {MAX_CODE_BITS} bits, not {codes}")
    if out:
        check_output_file(out, reads=[ckpt, *queries])
    loaded = load_for_inference(ckpt, device, precision, kernels="auto")
    q_images = _query_images(queries, loaded.image_size)
    if not is_store(gallery):  # an image folder: every image of its cached store
        gallery, split = store_for(gallery, "--gallery", labels=False), ALL_SPLITS
    store = Store(gallery)
    loaded.check_store(store, classes=False)  # any gallery: retrieval needs no classes
    names = [c["name"] for c in store.classes]
    data = store.split(split)
    gal = torch.from_numpy(gallery_features(loaded, store, split, progress=progress))
    q = features(loaded, torch.from_numpy(q_images))
    dist, idx = nearest(q, gal, k)
    result = {"gallery": str(gallery), "split": split, "k": k, "queries": []}
    for path, d_row, i_row in zip(queries, dist.tolist(), idx.tolist(), strict=True):
        result["queries"].append(
            {
                "image": str(path),
                "neighbors": [
                    {
                        "index": i,
                        "key": data.keys[i],
                        "name": names[int(data.labels[i])],
                        "distance": d,
                    }
                    for d, i in zip(d_row, i_row, strict=True)
                ],
            }
        )
    if codes:
        ae = train_codes(gal, codes)
        h_idx = hamming_nearest(ae.codes(q), ae.codes(gal), k)
        result["codes"] = {
            "bits": codes,
            "agreement": agreement(idx, h_idx),
            "hamming_neighbors": h_idx.tolist(),
        }
    if out:
        result["figure"] = _draw(out, q_images, data, idx, names)
    return result


def _draw(
    out: str, q_images: np.ndarray, data: StoreSplit, idx: torch.Tensor, classes: list[str]
) -> str:
    from ..data.images import center_view
    from ..runtime.files import atomic_write_bytes
    from .figures import neighbors_png

    rows = [[center_view(data.image(i)) for i in r] for r in idx.tolist()]
    labels = [[classes[int(data.labels[i])] for i in r] for r in idx.tolist()]
    png = neighbors_png([center_view(im) for im in q_images], rows, labels)
    atomic_write_bytes(out, png)  # checked before the search, against its inputs
    return str(out)


def neighbors_command(cfg, progress: bool = False) -> Printed:
    """`alexnet neighbors` (cfg: NeighborsConfig): each query's nearest gallery images."""
    r = neighbors(**vars(cfg), progress=progress)
    lines = []
    for q in r["queries"]:
        names = ", ".join(f"{n['name']} ({n['distance']:.1f})" for n in q["neighbors"])
        lines.append(f"{q['image']}: {names}")
    if "codes" in r:
        c = r["codes"]
        lines.append(
            f"{c['bits']}-bit codes: top-{cfg.k} agreement with Euclidean {c['agreement']:.1%}"
        )
    return Printed(r, [*lines, r["figure"]])
