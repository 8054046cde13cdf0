"""Deterministic, discrete transforms d(.) that make the compressed representations y_k
(thesis §5.2.5, Fig. 5.6), and the padding that makes any image size fit the network."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class Transform:
    """y = d(x) on uint8 images (B, C, H, W). ``scale``: how much smaller each side of y is;
    ``out_channels``: channels of y given RGB input."""

    name = "identity"
    scale = 1
    out_channels = 3

    def __call__(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class Downscale2x(Transform):
    """2x2 box filter rounded back to 8 bit: ``(a + b + c + d + 2) // 4`` in integers, so it is
    exact and identical on every machine."""

    name, scale, out_channels = "downscale", 2, 3

    def __call__(self, x: Tensor) -> Tensor:
        s = F.avg_pool2d(x.to(torch.int32).to(torch.float64), 2) * 4  # exact: sums of 4 ints
        return torch.div(s.to(torch.int64) + 2, 4, rounding_mode="floor").to(torch.uint8)


def luma(x: Tensor) -> Tensor:
    """ITU-R BT.601 luma in float64, (B, 1, H, W)."""
    if x.shape[1] == 1:
        return x.to(torch.float64)
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return (x.to(torch.float64) * w).sum(dim=1, keepdim=True)


class Grey(Transform):
    """Grey-scale representation (thesis §5.2.5): rounded luma."""

    name, scale, out_channels = "grey", 1, 1

    def __call__(self, x: Tensor) -> Tensor:
        return torch.round(luma(x)).clamp(0, 255).to(torch.uint8)


class Sketch(Transform):
    """Pencil sketch (thesis §7.3.1): the grey image colour-dodged with its blurred inverse,
    ``min(255, 255 * g / (255 - blur(255 - g)))``."""

    name, scale, out_channels = "sketch", 1, 1

    def __init__(self, sigma: float = 2.0) -> None:
        radius = int(3 * sigma)
        t = torch.arange(-radius, radius + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        self.kernel = k / k.sum()

    def __call__(self, x: Tensor) -> Tensor:
        g = torch.round(luma(x))
        inv = 255.0 - g
        r = self.kernel.numel() // 2
        k = self.kernel.to(x.device)
        blur = F.conv2d(F.pad(inv, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        blur = F.conv2d(F.pad(blur, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
        dodge = 255.0 * g / (255.0 - blur).clamp_min(1.0)
        return torch.round(dodge).clamp(0, 255).to(torch.uint8)


def make_transform(name: str) -> Transform:
    """The pluggable transform of a configuration."""
    table: dict[str, type[Transform]] = {"downscale": Downscale2x, "grey": Grey, "sketch": Sketch}
    try:
        return table[name]()
    except KeyError:
        raise ValueError(f"unknown transform {name!r}") from None


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad the bottom and right of (B, C, H, W) up to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    if x.dtype == torch.uint8:
        return F.pad(x.float(), (0, pw, 0, ph), mode="replicate").to(torch.uint8)
    return F.pad(x, (0, pw, 0, ph), mode="replicate")
