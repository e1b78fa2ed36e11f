"""The paper's augmentation (§4.1, docs/paper.md) on whole uint8 batches, on any device.

The gathers are the GPU path; on a CPU the same crops are taken by slicing, which
copies at memory speed (tests hold both to the same pixels).

As in torchvision's transforms v2, the random draws (`draw_*`) are kept apart from the
deterministic kernels (`crop_flip`, `BatchTransform.__call__`), so a test can pin the
parameters and check pixels exactly, and a resumed run can redraw the same ones.

Images travel as (B, 256, 256, 3) uint8, as the store holds them. The crop and the
flip are one gather (the flip is a reversed column index), the mean image is gathered
with the same indices (so it is subtracted before cropping, as in §2), and the result
is permuted to (B, 3, 224, 224), which is already channels_last in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CROP = 224  # §4.1: random 224x224 patches of the 256x256 images
LIGHTING_STD = 0.1  # §4.1: alpha_i ~ N(0, 0.1)
PIXEL_SCALE = 255.0  # eigenvalues are of 0..1 pixels; the net sees 0..255 values
CHANNEL_ORDERS = ("rgb", "bgr")  # bgr: Caffe's nets, trained on OpenCV's channel order


@dataclass
class CropParams:
    """Where each image of a batch is cropped, whether it is flipped, and its lighting draws."""

    top: torch.Tensor  # (B,) int64
    left: torch.Tensor  # (B,) int64
    flip: torch.Tensor  # (B,) bool
    alpha: torch.Tensor | None = None  # (B, 3) lighting draws, training only

    def slice(self, start: int, stop: int) -> CropParams:
        """The parameters of images start..stop (one process's share of a global batch)."""
        a = None if self.alpha is None else self.alpha[start:stop]
        return CropParams(self.top[start:stop], self.left[start:stop], self.flip[start:stop], a)


def draw_train_params(
    batch: int, generator: torch.Generator, size: int = 256, crop: int = CROP
) -> CropParams:
    """Random crop position, a flip with p=0.5 and fresh lighting draws, per image."""
    span = size - crop + 1
    top = torch.randint(0, span, (batch,), generator=generator)
    left = torch.randint(0, span, (batch,), generator=generator)
    flip = torch.rand(batch, generator=generator) < 0.5
    alpha = torch.randn(batch, 3, generator=generator) * LIGHTING_STD
    return CropParams(top, left, flip, alpha)


def center_params(batch: int, size: int = 256, crop: int = CROP) -> CropParams:
    """The central crop x crop patch of every image, unflipped, no lighting: evaluation."""
    off = torch.full((batch,), (size - crop) // 2, dtype=torch.long)
    return CropParams(off, off.clone(), torch.zeros(batch, dtype=torch.bool))


TEN_CROP_VIEWS = tuple(
    f"{corner}{side}"
    for side in ("", " flipped")
    for corner in ("top-left", "top-right", "bottom-left", "bottom-right", "centre")
)  # ten_crop_params's order


def ten_crop_params(batch: int, size: int = 256, crop: int = CROP) -> CropParams:
    """§4.1 test time: four corners and the centre, then the same five flipped.
    Ordered image by image: rows 10*i .. 10*i+9 belong to image i."""
    far, mid = size - crop, (size - crop) // 2
    tops = torch.tensor([0, 0, far, far, mid] * 2)
    lefts = torch.tensor([0, far, 0, far, mid] * 2)
    flips = torch.tensor([False] * 5 + [True] * 5)
    return CropParams(tops.repeat(batch), lefts.repeat(batch), flips.repeat(batch))


def _grid(p: CropParams, crop: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ar = torch.arange(crop, device=device)
    rows = p.top.to(device)[:, None] + ar
    cols = p.left.to(device)[:, None] + torch.where(p.flip.to(device)[:, None], crop - 1 - ar, ar)
    return rows, cols


def _patches(images: torch.Tensor, p: CropParams, crop: int):
    """CPU path: (j, view of image j's patch, its flip, top, left) per output row.
    Slicing copies at memory speed where a gather on a CPU is several times slower."""
    reps = len(p.top) // images.shape[0]
    for j, (t, l, f) in enumerate(zip(p.top.tolist(), p.left.tolist(), p.flip.tolist())):
        yield j, images[j // reps, t : t + crop, l : l + crop], f, t, l


def crop_flip(images: torch.Tensor, p: CropParams, crop: int = CROP) -> torch.Tensor:
    """(N, H, W, C) -> (B, crop, crop, C); with B = len(p) a multiple of N (ten crops)."""
    if images.device.type == "cpu":
        out = images.new_empty((len(p.top), crop, crop, images.shape[-1]))
        for j, patch, f, _, _ in _patches(images, p, crop):
            out[j] = patch.flip(1) if f else patch
        return out
    return crop_flip_gather(images, p, crop)


def crop_flip_gather(images: torch.Tensor, p: CropParams, crop: int = CROP) -> torch.Tensor:
    """The same crops as one gather: the flip is a reversed column index (GPU path)."""
    rows, cols = _grid(p, crop, images.device)
    reps = rows.shape[0] // images.shape[0]
    b = torch.arange(images.shape[0], device=images.device).repeat_interleave(reps)
    return images[b[:, None, None], rows[:, :, None], cols[:, None, :]]


def lighting_shift(alpha: torch.Tensor, eigval: torch.Tensor, eigvec: torch.Tensor) -> torch.Tensor:
    """§4.1 "fancy PCA": [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T per image, in 0..255 units.

    The eigenvalues are those of the covariance of 0..1 pixel values (the convention of
    the cuda-convnet-derived implementations); read literally in 0..255 units they
    would shift colours by hundreds of levels.
    """
    return (alpha * eigval) @ eigvec.T * PIXEL_SCALE


class BatchTransform:
    """The whole batch transform, held on one device: stored uint8 images -> network
    input. Crop and flip (§4.1), mean-image subtraction (§2), PCA lighting (§4.1) when
    the crop parameters carry lighting draws, and the recipe's input scale."""

    def __init__(
        self,
        mean,
        eigval=None,
        eigvec=None,
        device="cpu",
        scale: float = 1.0,
        std=None,
        channels: str = "rgb",
        crop: int = CROP,
    ):
        """mean: the (H, W, 3) mean image (§2), or a per-channel (3,) mean; std: optional
        per-channel divisor (torchvision's preprocessing). Values in 0..255 units, in the
        order of `channels` ("bgr" for Caffe's weights: the images' channels reversed
        before anything else). crop: the side of the patches the net sees."""
        if channels not in CHANNEL_ORDERS:
            raise ValueError(
                f"channels must be one of {', '.join(CHANNEL_ORDERS)}, not {channels!r}"
            )
        self.channels, self.crop = channels, crop
        self.device = torch.device(device)
        as_t = lambda v: (
            None if v is None else torch.as_tensor(v, dtype=torch.float32, device=self.device)
        )  # noqa: E731
        self.mean, self.std = as_t(mean), as_t(std)
        self.eigval, self.eigvec = as_t(eigval), as_t(eigvec)
        # 1.0: the paper's raw centred 0..255 values (§2); recipes may scale them down
        self.scale = scale

    @classmethod
    def from_stats(cls, stats, device="cpu", scale: float = 1.0) -> BatchTransform:
        """The transform of a store's statistics (its mean image and RGB PCA)."""
        return cls(stats.mean, stats.eigval, stats.eigvec, device, scale)

    @property
    def image_size(self) -> int | None:
        """The side of the images this transform takes: its mean image's (None for a
        per-channel mean, which fits any size)."""
        return int(self.mean.shape[0]) if self.mean.dim() == 3 else None

    def views(self, batch: int, crops: int = 1, size: int | None = None) -> CropParams:
        """Test-time views of this transform's crop size: the centre, or §4.1's ten, of
        images of `size` (default: the mean image's, else 256)."""
        size = size or self.image_size or 256
        if crops == 1:
            return center_params(batch, size, self.crop)
        return ten_crop_params(batch, size, self.crop)

    def __call__(
        self, images: torch.Tensor, p: CropParams, crop: int | None = None
    ) -> torch.Tensor:
        """uint8 (N, 256, 256, 3) -> float32 (B, 3, crop, crop), channels_last."""
        crop = crop or self.crop
        if self.image_size is not None and tuple(images.shape[1:3]) != tuple(self.mean.shape[:2]):
            raise ValueError(
                f"images of {tuple(images.shape[1:3])} pixels for a mean image of "
                f"{tuple(self.mean.shape[:2])}: the net was trained on images of another size"
            )
        images = images.to(self.device, non_blocking=True)
        if self.channels == "bgr":
            images = images.flip(-1)
        if self.mean.dim() == 3 and self.device.type == "cpu":
            x = torch.empty((len(p.top), crop, crop, images.shape[-1]), dtype=torch.float32)
            if torch.utils.data.get_worker_info() is not None:
                x.share_memory_()  # built where it is sent from: no copy on the way out
            for j, patch, f, t, l in _patches(images, p, crop):
                m = self.mean[t : t + crop, l : l + crop]
                torch.sub(patch.flip(1) if f else patch, m.flip(1) if f else m, out=x[j])
        elif self.mean.dim() == 3:
            x = crop_flip(images, p, crop).float()
            rows, cols = _grid(p, crop, self.device)
            x -= self.mean[rows[:, :, None], cols[:, None, :]]
        else:
            x = crop_flip(images, p, crop).float() - self.mean
        if self.std is not None:
            x /= self.std
        if p.alpha is not None:
            shift = lighting_shift(p.alpha.to(self.device), self.eigval, self.eigvec)
            x += (shift.flip(-1) if self.channels == "bgr" else shift)[:, None, None]
        if self.scale != 1.0:
            x *= self.scale
        return x.permute(0, 3, 1, 2)
