"""Convolutions that float32 computes exactly: integer activations times integer weights, every
partial sum an integer below 2^24 in magnitude, so the result does not depend on the order of
summation (oneDNN's blocking, the thread count, the SIMD width, the CPU kind). The integer-network
idea of Balle, Johnston & Minnen 2019 ("Integer networks for data compression with
latent-variable models"), here by post-training quantization of trained float layers. Used by the
lossless head (:mod:`models.exact_head`) and by the render a lossless chunk is coded against
(:mod:`models.exact_render`).

``verify_exact_float32()`` checks, once per process, that this machine's float32 convolution is
exact on integer data (it would not be if a library switched to Winograd or reduced precision);
if not, the convolutions run in float64, exact as well and slower, so the result is the same.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EXACT_LIMIT = float(2 ** 24 - 1)   # the largest integer float32 holds with every smaller one

_checked: dict[str, bool] = {}


def verify_exact_float32() -> bool:
    """Whether float32 convolutions are exact on bounded integer data here (cached)."""
    if "ok" not in _checked:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(-255, 256, (1, 32, 40, 56), generator=g, dtype=torch.float64)
        w = torch.randint(-2000, 2001, (16, 32, 3, 3), generator=g, dtype=torch.float64)
        ref = F.conv2d(x, w, padding=1)
        assert float(ref.abs().max()) < 2 ** 24
        _checked["ok"] = bool(torch.equal(F.conv2d(x.float(), w.float(), padding=1).double(), ref))
    return _checked["ok"]


class ExactConv:
    """One convolution on integer activations with integer weights (a power-of-two scale per
    output channel), exact in float32."""

    def __init__(self, weight: Tensor, bias: Tensor | None, in_max: Tensor, padding: int) -> None:
        """``weight`` (O, I, k, k) and ``bias`` (O,) in the float layer's units per unit of the
        integer input; ``in_max`` (I,): the bound of each input channel's integers. Each output
        channel gets the finest scale 2^s with ``sum |W| * in_max + |B| < 2^24``."""
        w = weight.double()
        b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.double()
        in_max = in_max.double().view(1, -1, 1, 1)
        mass = (w.abs() * in_max).sum((1, 2, 3)) + b.abs()
        s = torch.floor(torch.log2(EXACT_LIMIT / (mass * (1 + 1e-6) + 1e-30)))
        while True:  # rounding may push a channel over the bound: one step coarser there
            W, B = torch.round(w * torch.pow(2.0, s).view(-1, 1, 1, 1)), torch.round(b * torch.pow(2.0, s))
            over = (W.abs() * in_max).sum((1, 2, 3)) + B.abs() > EXACT_LIMIT
            if not bool(over.any()):
                break
            s = s - over.double()
        self.padding = padding
        self.shift = s.float()   # acc = y * 2^shift
        self.weight, self.bias = W.float(), B.float()
        self._w64, self._b64 = W, B

    def __call__(self, a: Tensor) -> Tensor:
        """Integer activations (B, I, h, w) -> the exact accumulator (B, O, h, w), bias included,
        in float32 (float64 where float32 convolutions are not exact here)."""
        if verify_exact_float32():
            return F.conv2d(a.float(), self.weight, self.bias, padding=self.padding)
        return F.conv2d(a.double(), self._w64, self._b64, padding=self.padding).float()
