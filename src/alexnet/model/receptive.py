"""Where in the input each unit of a convolutional layer looks: its receptive field.

For every module of `features`, from the kernel, stride and padding of each layer below
it: `size` (the side of the square of input pixels a unit depends on), `stride` (input
pixels between neighbouring units) and `offset` (the input row of the first pixel of
unit 0's field: negative where padding puts it outside the image). A unit at (y, x) sees
rows offset + y * stride ... + size - 1, and the same columns; `box` clips that to the
image, without shifting it (a unit at the border sees less image, not another part).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Field:
    """A layer's receptive field geometry (see the module docstring)."""

    size: int
    stride: int
    offset: int

    def box(self, y: int, x: int, image_size: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), bottom and right exclusive: the input pixels unit
        (y, x) sees, clipped to an image_size x image_size input."""
        top, left = self.offset + y * self.stride, self.offset + x * self.stride
        clip = lambda v: max(0, min(image_size, v))  # noqa: E731
        return clip(top), clip(left), clip(top + self.size), clip(left + self.size)


def _pair(v) -> int:
    """One side of a square kernel, stride or padding (all of ours are square)."""
    return v[0] if isinstance(v, tuple) else v


def receptive_fields(features: nn.Sequential) -> dict[str, Field]:
    """name of each child of `features` -> the receptive field of its output units."""
    size, stride, offset = 1, 1, 0
    fields = {}
    for name, module in features.named_children():
        if isinstance(module, nn.ZeroPad2d):
            offset -= module.padding[2] * stride  # the top padding (left is the same)
        elif isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p = (_pair(module.kernel_size), _pair(module.stride), _pair(module.padding))
            dilation = _pair(getattr(module, "dilation", 1))
            size += (dilation * (k - 1)) * stride
            offset -= p * stride
            stride *= s
        fields[name] = Field(size, stride, offset)
    return fields
