"""The lossless head in integer arithmetic that float32 computes exactly: the same numbers on
every thread count and CPU kind, at float32 speed (integer networks, Balle, Johnston & Minnen
2019, "Integer networks for data compression with latent-variable models", here by
post-training quantization of the trained float head).

Each layer is an :class:`~models.exact_conv.ExactConv` (exact in float32). Between layers
activations are rounded to multiples of ``2^-ACT_BITS`` and clamped (:data:`ACT_LIMIT`), GELU is
a lookup table on that grid, and the residual additions are integer additions. The outputs leave
as exact float64 numbers; the head's means and scales are then formed and snapped as in the float
head (:meth:`LosslessHead.walk`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .exact_conv import ExactConv
from .lossless import FEATURE_BITS, FEATURE_LIMIT, LosslessHead

ACT_BITS = 5             # activations are multiples of 2^-ACT_BITS
ACT_LIMIT = 64.0         # and clamped to [-ACT_LIMIT, ACT_LIMIT]
Q_LIMIT = 1000           # |quality| * 100 is clamped to this (the RD model's range lies within)
_IN_MAX = (255.0, 255.0, 1.0, float(Q_LIMIT))  # |input| bound: 2 xhat - 255, errors, one-hots, q * 100


def _requant(acc: Tensor, conv: ExactConv, extra: Tensor | None = None) -> Tensor:
    """The accumulator on the activation grid: round(y * 2^ACT_BITS), clamped (exact: a power of
    two times an integer below 2^24, then rounding). ``extra`` (float32, the layer's units) joins
    y first in one float32 addition, which IEEE arithmetic rounds alike everywhere. Works in place
    on ``acc`` (a convolution's fresh output)."""
    lim = ACT_LIMIT * 2 ** ACT_BITS
    if extra is None:
        return acc.mul_(torch.pow(2.0, ACT_BITS - conv.shift).view(1, -1, 1, 1)).round_().clamp_(-lim, lim)
    y = acc.mul_(torch.pow(2.0, -conv.shift).view(1, -1, 1, 1)).add_(extra)
    return y.mul_(2 ** ACT_BITS).round_().clamp_(-lim, lim)


class ExactLosslessHead(LosslessHead):
    """A trained :class:`LosslessHead` in exact integer arithmetic (module docstring); its
    :meth:`walk` is the float head's, on float64 inputs."""

    def __init__(self, head: LosslessHead) -> None:
        super().__init__(head.config)
        self.load_state_dict(head.state_dict())
        self.double().eval()
        n = 2 ** ACT_BITS
        lim = int(ACT_LIMIT * n)
        grid = torch.arange(-lim, lim + 1, dtype=torch.float64) / n
        self._gelu = torch.round(F.gelu(grid) * n).float()  # the GELU of each activation integer, on the grid
        self._lim = lim
        act_max = torch.full((head.config.width,), float(lim))
        groups = [12, 12, 4 + self.MAX_DEPTH + 1, 1]
        in_max = torch.cat([torch.full((g,), m) for g, m in zip(groups, _IN_MAX)])
        units = torch.cat([torch.full((12,), 1 / 510), torch.full((12,), 1 / 32), torch.ones(groups[2]), torch.full((1,), 1 / 800)])
        built: dict[int, tuple] = {}  # a shared head's scales run one network: build it once
        for scale in range(head.config.depth + 1):
            inp, blocks, out = self.layers(scale)
            if id(inp) not in built:
                built[id(inp)] = (
                    ExactConv(inp.weight.detach().double() * units.view(1, -1, 1, 1), inp.bias.detach(), in_max, 1),
                    [(ExactConv(b.c1.weight.detach() / n, b.c1.bias.detach(), act_max, 1),
                      ExactConv(b.c2.weight.detach() / n, b.c2.bias.detach(), act_max, 1)) for b in blocks],
                    ExactConv(out.weight.detach() / n, out.bias.detach(), act_max, 0))
        # per scale: (input layer, blocks, output layer), exact
        self._nets = [built[id(self.layers(scale)[0])] for scale in range(head.config.depth + 1)]
        feat_max = torch.full((head.config.features,), FEATURE_LIMIT * 2 ** FEATURE_BITS)
        self._feat = [ExactConv(f.weight.detach() * 2.0 ** -FEATURE_BITS, f.bias.detach(), feat_max, 0) for f in self.feat]

    def _act(self, a: Tensor) -> Tensor:
        # index_select with int32 indices: half the time of take with int64 ones
        return self._gelu.index_select(0, a.to(torch.int32).add_(self._lim).view(-1)).view(a.shape)

    @torch.no_grad()
    def feature_term(self, scale: int, features: list[Tensor] | None) -> Tensor | None:
        """As :meth:`LosslessHead.feature_term`, exactly: the first layer's units, float32."""
        ints = self.feature_ints_at(scale, features)
        if ints is None:
            return None
        conv = self._feat[scale]
        return conv(ints) * torch.pow(2.0, -conv.shift).view(1, -1, 1, 1)  # exact: a power of two

    @torch.no_grad()
    def stage_outputs(self, xhat_ph: Tensor, err_ph: Tensor, position: int, scale: int,
                      q: Tensor, extra: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """As :meth:`LosslessHead.stage_outputs`, in exact integer arithmetic (float64 results).
        ``extra``: :meth:`feature_term`, added to the first layer's output (:func:`_requant`)."""
        b, _, _, h, w = xhat_ph.shape
        onehot = self.stage_planes(b, h, w, position, scale, torch.float32)
        q100 = torch.round(q.double() * 100).clamp(-Q_LIMIT, Q_LIMIT).float().view(b, 1, 1, 1).expand(b, 1, h, w)
        inp = torch.cat([2 * xhat_ph.reshape(b, 12, h, w).float() - 255, err_ph.reshape(b, 12, h, w).float(),
                         onehot, q100], 1)
        first, blocks, last = self._nets[scale]
        r = self._act(_requant(first(inp), first, None if extra is None else extra.float()))
        for c1, c2 in blocks:
            u = self._act(_requant(c1(self._act(r)), c1))
            r = _requant(c2(u), c2).add_(r).clamp_(-self._lim, self._lim)
        o = last(r).double() * torch.pow(2.0, -last.shift.double()).view(1, -1, 1, 1)
        delta, raw, coef = o[:, :3] * 8.0, o[:, 3:6], o[:, 6:9]
        return delta, F.softplus(raw) + 0.1, coef
