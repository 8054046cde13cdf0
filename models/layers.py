"""Network building blocks of thesis §5.3 (Fig. 5.7).

* Weight-normalised convolutions (Salimans & Kingma 2016, arXiv:1602.07868) with data-dependent
  initialisation: on the first batch, gain and bias are set so every output channel has zero mean
  and unit variance (times ``init_scale``).
* DenseNet layer (Huang et al. 2017): 1x1 conv to 4G channels, ELU, 3x3 conv to G, ELU, channel
  attention (Zhang et al. 2018, RCAN), concatenated to its input.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _WeightNormMixin:
    """Shared data-dependent initialisation of weight-normalised layers."""

    v: nn.Parameter
    g: nn.Parameter
    b: nn.Parameter
    init_scale: float
    ddi_pending: bool
    _norm_dims: tuple[int, ...]
    _gain_shape: tuple[int, ...]

    def _weight(self) -> Tensor:
        norm = self.v.pow(2).sum(dim=self._norm_dims, keepdim=True).clamp_min(1e-12).rsqrt()
        return self.v * norm * self.g.view(self._gain_shape)

    def _ddi(self, out_no_bias: Tensor) -> Tensor:
        """Set g, b from the batch statistics of ``out_no_bias`` (computed with g = 1, b = 0)."""
        dims = [0] + list(range(2, out_no_bias.dim()))
        mean = out_no_bias.mean(dim=dims)
        std = out_no_bias.std(dim=dims, unbiased=False)
        scale = self.init_scale / (std + 1e-6)
        with torch.no_grad():
            self.g.copy_(scale)
            self.b.copy_(-mean * scale)
        self.ddi_pending = False
        shape = [1, -1] + [1] * (out_no_bias.dim() - 2)
        return (out_no_bias - mean.view(shape)) * scale.view(shape)

    def _op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if self.ddi_pending:
            with torch.no_grad():
                self.g.fill_(1.0)
                return self._ddi(self._op(x, self._weight(), None))
        return self._op(x, self._weight(), self.b)


class WNConv2d(_WeightNormMixin, nn.Module):
    """Weight-normalised 2-D convolution, ``w = g * v / ||v||`` (per output channel)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1,
                 init_scale: float = 1.0) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel) * 0.05)
        self.g = nn.Parameter(torch.ones(c_out))
        self.b = nn.Parameter(torch.zeros(c_out))
        self.stride, self.padding = stride, kernel // 2
        self.init_scale, self.ddi_pending = init_scale, False
        self._norm_dims, self._gain_shape = (1, 2, 3), (-1, 1, 1, 1)

    def _op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding)

    def forward_float64(self, x: Tensor) -> Tensor:
        """The same convolution computed in float64 (the codec snaps its outputs to a grid)."""
        return F.conv2d(x.double(), self._weight().double(), self.b.double(), self.stride, self.padding)


class WNConvTranspose2d(_WeightNormMixin, nn.Module):
    """Weight-normalised transposed convolution that upsamples exactly by ``stride``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2, init_scale: float = 1.0) -> None:
        super().__init__()
        kernel = 2 * stride
        self.v = nn.Parameter(torch.randn(c_in, c_out, kernel, kernel) * 0.05)
        self.g = nn.Parameter(torch.ones(c_out))
        self.b = nn.Parameter(torch.zeros(c_out))
        self.stride, self.padding = stride, stride // 2
        self.init_scale, self.ddi_pending = init_scale, False
        self._norm_dims, self._gain_shape = (0, 2, 3), (1, -1, 1, 1)

    def _op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv_transpose2d(x, weight, bias, self.stride, self.padding)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: global average pool, 1x1 down by ``reduction``, ELU, 1x1 up,
    sigmoid; the input is multiplied by the gate (RCAN, arXiv:1807.02758)."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.down = nn.Conv2d(channels, hidden, 1)
        self.up = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.up(F.elu(self.down(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class DenseLayer(nn.Module):
    """1x1 conv to 4G, ELU, 3x3 conv to G, ELU, channel attention on the G new features, then
    concatenation with the input (which therefore passes through unchanged)."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.conv1 = WNConv2d(c_in, 4 * growth, 1)
        self.conv3 = WNConv2d(4 * growth, growth, 3)
        self.attention = ChannelAttention(growth)

    def forward(self, x: Tensor) -> Tensor:
        h = F.elu(self.conv3(F.elu(self.conv1(x))))
        return torch.cat([x, self.attention(h)], dim=1)


class DenseBlock(nn.Module):
    """``n_layers`` dense layers followed by a 1x1 transition back to ``c_out`` channels."""

    def __init__(self, c_in: int, c_out: int, growth: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[DenseLayer(c_in + i * growth, growth) for i in range(n_layers)])
        self.transition = WNConv2d(c_in + n_layers * growth, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(self.transition(self.layers(x)))


def conv_elu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(WNConv2d(c_in, c_out, kernel, stride), nn.ELU())


def weight_norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _WeightNormMixin)]


def data_dependent_init(model: nn.Module, run: Callable[[], Any]) -> None:
    """Initialise every weight-normalised layer of ``model`` from the statistics of one batch:
    ``run()`` must push that batch through the model (Salimans & Kingma 2016, §3)."""
    layers = weight_norm_layers(model)
    for m in layers:
        m.ddi_pending = True  # type: ignore[attr-defined]
    try:
        with torch.no_grad():
            run()
    finally:
        for m in layers:
            m.ddi_pending = False  # type: ignore[attr-defined]
