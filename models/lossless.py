"""The lossless head: p(x | x_hat), the probability of the original 8-bit image given the RD
model's final render, for progressive-to-lossless coding (Mentzer et al. 2020, "Learning better
lossless compression using lossy compression": code x given a lossy reconstruction).

x is split into the four phases of its 2x2 blocks, coded one after the other in the order
(0,0), (1,1), (0,1), (1,0) (as the multi-stage parallel context models of lossless coders: each
phase sees x_hat everywhere and x at the phases before it, so every phase is one convolutional pass
at half resolution, not one pass per pixel); phase (0,0) is itself split the same way, ``depth``
times (:func:`stages`). Within a pixel the channels are autoregressive, R,
then G given R, then B given R and G, through linear coefficients on the earlier channels'
prediction errors (PixelCNN++, Salimans et al. 2017, §2.2; the thesis' pixel model).
With ``config.features`` every stage also sees the decoder's features at its phases' resolution
(the final render head's stage inputs at 1/8, 1/4, 1/2 of x: :mod:`models.exact_render`), as
Mentzer et al. 2020 condition their residual coder on the lossy decoder's features.

Each sub-pixel is a discretized Laplace on 0..255 with open edge bins, not a logistic mixture:
the coder then needs no 256-entry table per sub-pixel (constriction's quantized Laplace takes the
mean and scale directly). Measured on this CPU: the mixture's tables for one twelfth of a Kodak
image took 4.4 s (about 50 s an image), the quantized Laplace codes a whole image's 1.18 M
sub-pixels in 0.13 s and decodes them in 0.30 s.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LosslessConfig
from .rd_layers import ResBlock, conv

#: The phase of each 2x2 block coded at each stage, as the pixel_unshuffle index dy * 2 + dx.
PHASE_ORDER = (0, 3, 1, 2)
#: Scale grid of the coder: log2(b) is snapped to multiples of 1/SCALE_STEPS in [SCALE_LO, SCALE_HI].
SCALE_STEPS = 8
SCALE_LO, SCALE_HI = -3.0, 7.0
#: Means are snapped to multiples of 1/MEAN_STEPS.
MEAN_STEPS = 64
#: Decoder features enter as integers: multiples of 2^-FEATURE_BITS, clamped to +-FEATURE_LIMIT.
FEATURE_BITS = 10
FEATURE_LIMIT = 4.0
_FAR = 1.0e4  # stands in for an open edge bin's infinite bound
#: ``code(d, phase, channel, mean, scale) -> values`` of :meth:`LosslessHead.walk`
Coder = Callable[[int, int, int, Tensor, Tensor], Tensor]


def _log1mexp(d: Tensor) -> Tensor:
    """log(1 - exp(-d)) for d > 0 (Maechler 2012)."""
    d = d.clamp_min(1e-12)
    return torch.where(d > math.log(2.0), torch.log1p(-torch.exp(-d)), torch.log(-torch.expm1(-d)))


def laplace_bits(value: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
    """Bits of the integers ``value`` (0..255) under a Laplace(mean, scale) discretized to unit
    bins, bins 0 and 255 open to -inf / +inf (the distribution constriction's
    ``QuantizedLaplace(0, 255)`` codes, before its fixed-point rounding). Elementwise, finite
    with finite gradients in every tail."""
    v = value.to(mean.dtype)
    lo = torch.where(value <= 0, torch.full_like(v, -_FAR), v - 0.5 - mean)
    hi = torch.where(value >= 255, torch.full_like(v, _FAR), v + 0.5 - mean)
    # mirror so that the bin's centre lies at or above the mean (the Laplace is symmetric)
    flip = (lo + hi) < 0
    lo, hi = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    b = scale
    # lo >= 0: P = S(lo) - S(hi) = 1/2 e^(-lo/b) (1 - e^(-(hi-lo)/b)), S the survival function
    far = math.log(0.5) - lo.clamp_min(0.0) / b + _log1mexp((hi - lo) / b)
    # lo < 0 < hi: P = 1 - 1/2 e^(lo/b) - 1/2 e^(-hi/b)
    near = torch.log((1.0 - 0.5 * torch.exp(lo.clamp_max(0.0) / b) - 0.5 * torch.exp(-hi.clamp_min(0.0) / b)).clamp_min(1e-30))
    return -torch.where(lo >= 0, far, near) / math.log(2.0)


def snap_scale(scale: Tensor) -> Tensor:
    """The coder's scale: log2(b) rounded to the grid (both sides compute the same b from it)."""
    return torch.exp2(torch.round(torch.log2(scale).clamp(SCALE_LO, SCALE_HI) * SCALE_STEPS) / SCALE_STEPS)


def snap_mean(mean: Tensor) -> Tensor:
    """The coder's mean: rounded to multiples of 1/MEAN_STEPS within [-1, 256]."""
    return torch.round(mean.clamp(-1.0, 256.0) * MEAN_STEPS) / MEAN_STEPS


def feature_ints(f: Tensor) -> Tensor:
    """A decoder feature map as the head's integer input: round(f 2^FEATURE_BITS), clamped.
    (The features are the same float32 numbers on every machine, so these integers are too.)"""
    lim = FEATURE_LIMIT * 2 ** FEATURE_BITS
    return torch.round(f.float() * 2 ** FEATURE_BITS).clamp(-lim, lim)


def to_phases(img: Tensor) -> Tensor:
    """(B, C, H, W) with even H, W -> (B, 4, C, H/2, W/2): the four phases dy * 2 + dx."""
    b, c, h, w = img.shape
    return F.pixel_unshuffle(img, 2).view(b, c, 4, h // 2, w // 2).transpose(1, 2)


def from_phases(ph: Tensor) -> Tensor:
    """Inverse of :func:`to_phases`."""
    b, _, c, h, w = ph.shape
    return F.pixel_shuffle(ph.transpose(1, 2).reshape(b, c * 4, h, w), 2)


def stages(depth: int) -> list[tuple[int, int, int]]:
    """The coding order as (scale d, position i in PHASE_ORDER, phase): the four phases of
    x^(depth), then for each finer scale d its three phases other than (0,0), which is x^(d+1).
    x^(d) = x[::2^d, ::2^d] (the multi-resolution split of lossless coders such as L3C, Mentzer
    et al. 2019): only the coarsest quarter of x^(depth) is predicted from x_hat alone."""
    out = [(depth, i, ph) for i, ph in enumerate(PHASE_ORDER)]
    for d in range(depth - 1, -1, -1):
        out += [(d, i, ph) for i, ph in enumerate(PHASE_ORDER) if i > 0]
    return out


class StageNet(nn.Module):
    """The network a stage runs: a 3x3 input layer, residual blocks and a 1x1 output layer of 9
    channels per sub-pixel position (:meth:`LosslessHead.stage_outputs`)."""

    def __init__(self, c_in: int, width: int, blocks: int) -> None:
        super().__init__()
        self.inp = conv(c_in, width)
        self.blocks = nn.Sequential(*[ResBlock(width) for _ in range(blocks)])
        self.out = conv(width, 9, 1)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.zero_()
            self.out.bias[3:6] = math.log(math.expm1(4.0))  # scale ~4 levels at the start


class LosslessHead(nn.Module):
    """One network for every stage (or, ``config.per_scale``, one per scale): the inputs are
    x_hat's four phases at the stage's scale, the errors x - x_hat of the phases already coded
    there (zero elsewhere), the stage and the scale (one-hot), the lossy quality and
    (``config.features``) the decoder's features at the phases' resolution; the outputs per
    sub-pixel of the stage's phase are a mean correction, a scale and the three channel
    coefficients (G|R, B|R, B|G)."""

    MAX_DEPTH = 3
    N_INPUTS = 12 + 12 + 4 + MAX_DEPTH + 1 + 1

    def __init__(self, config: LosslessConfig) -> None:
        super().__init__()
        if not 0 <= config.depth <= self.MAX_DEPTH:
            raise ValueError(f"depth must be in 0..{self.MAX_DEPTH}, got {config.depth}")
        self.config = config
        C = config.width
        first = StageNet(self.N_INPUTS, C, config.blocks)
        # Scale 0's network (every scale's without per_scale) keeps the names inp / blocks / out of
        # the heads shipped before per_scale, and the registration order inp, feat, blocks, out:
        # an optimiser's state in a checkpoint follows the order of parameters().
        self.inp = first.inp
        # one 1x1 convolution per scale: the decoder's features differ in meaning from scale to scale
        self.feat = nn.ModuleList([conv(config.features, C, 1) for _ in range(config.depth + 1)] if config.features else [])
        for f in self.feat:
            nn.init.zeros_(f.weight)
            nn.init.zeros_(f.bias)
        self.blocks, self.out = first.blocks, first.out
        self.nets = nn.ModuleList([StageNet(self.N_INPUTS, C, config.blocks) for _ in range(config.depth)]
                                  if config.per_scale else [])

    def layers(self, scale: int) -> tuple[nn.Conv2d, nn.Sequential, nn.Conv2d]:
        """(input layer, residual blocks, output layer) of the network that ``scale`` runs."""
        if scale == 0 or not self.config.per_scale:
            return self.inp, self.blocks, self.out
        n = self.nets[scale - 1]
        return n.inp, n.blocks, n.out

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this."""
        return 2 ** (self.config.depth + 1)

    def feature_ints_at(self, scale: int, features: list[Tensor] | None) -> Tensor | None:
        """The integer feature map (:func:`feature_ints`) that ``scale`` reads (None for a head
        without features). ``features``: the render head's stage inputs, coarse to fine
        (:func:`models.exact_render.exact_render`); scale d reads the one at the phases'
        resolution, 2^(d+1) times coarser than x."""
        if not self.config.features:
            return None
        if features is None or len(features) < self.config.depth + 1:
            raise ValueError(f"this lossless head reads the decoder's features at {self.config.depth + 1} scales")
        return feature_ints(features[len(features) - 1 - scale])

    def feature_term(self, scale: int, features: list[Tensor] | None) -> Tensor | None:
        """The decoder features' contribution to the first layer at ``scale`` (None without
        features; :meth:`feature_ints_at`)."""
        ints = self.feature_ints_at(scale, features)
        if ints is None:
            return None
        return self.feat[scale](ints.to(self.inp.weight.dtype) * 2.0 ** -FEATURE_BITS)

    def stage_outputs(self, xhat_ph: Tensor, err_ph: Tensor, position: int, scale: int,
                      q: Tensor, extra: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(mean correction, Laplace scale, coefficients) of the phase at ``position`` of
        PHASE_ORDER at scale ``scale``, each (B, 3, h, w). ``xhat_ph``: x_hat's phases at that scale
        (B, 4, 3, h, w) in 0..255; ``err_ph``: x - x_hat at the phases coded so far (zero at the
        others), in levels; ``extra``: :meth:`feature_term` at that scale."""
        b, _, _, h, w = xhat_ph.shape
        onehot = self.stage_planes(b, h, w, position, scale, xhat_ph.dtype).to(xhat_ph.device)
        qmap = (q.to(xhat_ph.dtype) / 8.0).view(b, 1, 1, 1).expand(b, 1, h, w)
        inp = torch.cat([xhat_ph.reshape(b, 12, h, w) / 255.0 - 0.5, err_ph.reshape(b, 12, h, w) / 32.0, onehot, qmap], 1)
        first, blocks, last = self.layers(scale)
        pre = first(inp)
        o = last(blocks(F.gelu(pre if extra is None else pre + extra)))
        delta, raw, coef = o[:, :3] * 8.0, o[:, 3:6], o[:, 6:9]
        return delta, F.softplus(raw) + 0.1, coef

    def stage_planes(self, b: int, h: int, w: int, position: int, scale: int, dtype: torch.dtype) -> Tensor:
        """The stage's one-hot input planes (B, 4 + MAX_DEPTH + 1, h, w): its position in
        PHASE_ORDER and its scale."""
        planes = torch.zeros(b, 4 + self.MAX_DEPTH + 1, h, w, dtype=dtype)
        planes[:, position] = 1.0
        planes[:, 4 + scale] = 1.0
        return planes

    @staticmethod
    def channel_means(base: Tensor, delta: Tensor, coef: Tensor, target: Tensor | None,
                      channel: int) -> Tensor:
        """Mean of ``channel`` (B, h, w): x_hat + correction, plus the coefficients times the
        prediction errors of the earlier channels, whose true values ``target`` holds."""
        mean = base[:, channel] + delta[:, channel]
        if channel == 0:
            return mean
        assert target is not None
        err_r = target[:, 0] - (base[:, 0] + delta[:, 0])
        if channel == 1:
            return mean + coef[:, 0] * err_r
        err_g = target[:, 1] - (base[:, 1] + delta[:, 1] + coef[:, 0] * err_r)
        return mean + coef[:, 1] * err_r + coef[:, 2] * err_g

    def walk(self, xhat: Tensor, q: Tensor, code: Coder, snapped: bool = False,
             features: list[Tensor] | None = None) -> Tensor:
        """The one coding order of encoder, decoder and training: for each stage of :func:`stages`
        and each channel R, G, B, the stage's network gives every sub-pixel of the phase a mean and
        a scale, and ``code(d, phase, channel, mean, scale)`` returns that channel's true values
        (B, h, w) there: the encoder and training read them from x, a decoder decodes them. The
        later channels' means and the later stages' inputs use them. ``xhat`` (B, 3, H, W): the
        render in 0..255 (any float dtype; the head runs in it). ``snapped``: the coder's
        parameters (:func:`snap_mean`, :func:`snap_scale`). ``features``: the decoder's features
        (:meth:`feature_term`; heads with ``config.features`` only). Returns x as ``code`` gave it."""
        if xhat.shape[-2] % self.multiple or xhat.shape[-1] % self.multiple:
            raise ValueError(f"image sides must be multiples of {self.multiple}, got {tuple(xhat.shape[-2:])}")
        depth = self.config.depth
        known = xhat.clone()
        for d in range(depth, -1, -1):
            s = 2 ** d
            hp = to_phases(xhat[..., ::s, ::s])
            err = torch.zeros_like(hp)
            if d < depth:
                err[:, 0] = known[..., ::2 * s, ::2 * s] - hp[:, 0]  # x^(d+1), coded at the coarser scale
            extra = self.feature_term(d, features)  # the same for every stage of the scale
            for i, ph in enumerate(PHASE_ORDER):
                if d < depth and i == 0:
                    continue
                delta, scale, coef = self.stage_outputs(hp, err, i, d, q, extra)
                if snapped:
                    scale = snap_scale(scale)
                base = hp[:, ph]
                got: list[Tensor] = []
                for c in range(3):
                    target = torch.stack(got + [base[:, c]] * (3 - c), 1)  # channels >= c unused
                    mean = self.channel_means(base, delta, coef, target, c)
                    got.append(code(d, ph, c, snap_mean(mean) if snapped else mean, scale[:, c]).to(xhat.dtype))
                values = torch.stack(got, 1)
                dy, dx = divmod(ph, 2)
                known[..., dy * s::2 * s, dx * s::2 * s] = values
                err = err.clone()  # the network saved the old one for the backward pass
                err[:, ph] = values - base
        return known

    def stage_bits(self, x: Tensor, xhat: Tensor, q: Tensor, snapped: bool = False,
                   features: list[Tensor] | None = None) -> Tensor:
        """Bits of each image of ``x`` (B, 3, H, W) uint8 at each stage of :func:`stages`,
        (B, n_stages), given ``xhat`` (same shape, uint8: the render the decoder shows) and its
        ``features`` (:meth:`walk`) at lossy quality ``q`` (B,), with the continuous parameters
        (training) or, ``snapped``, with the coder's (:func:`snap_mean`, :func:`snap_scale`)."""
        bits: list[Tensor] = []
        phases: dict[int, Tensor] = {}

        def code(d: int, ph: int, c: int, mean: Tensor, scale: Tensor) -> Tensor:
            if d not in phases:
                phases[d] = to_phases(x[..., ::2 ** d, ::2 ** d].to(mean.dtype))
            target = phases[d][:, ph, c]
            bits.append(laplace_bits(target, mean, scale).sum(dim=(1, 2)))
            return target

        self.walk(xhat.to(self.inp.weight.dtype), q, code, snapped, features)
        return torch.stack(bits, 1).view(len(x), -1, 3).sum(2)

    def forward(self, x: Tensor, xhat: Tensor, q: Tensor, features: list[Tensor] | None = None) -> Tensor:
        """Bits of each image (B,): the training loss (:meth:`stage_bits` summed)."""
        return self.stage_bits(x, xhat, q, features=features).sum(1)


def grow_head(head: LosslessHead, changes: dict[str, object], seed: int = 0) -> LosslessHead:
    """A head that computes what ``head`` does, with ``changes`` to its config
    (``train_lossless --grow``): ``features`` (0 -> N; 1x1 convolutions that start at zero),
    ``width`` (more channels), ``blocks`` (more residual blocks, which start as the identity) and
    ``per_scale`` (False -> True: each scale's network starts as a copy of the shared one).
    A widened layer keeps its trained weights; its new output channels start as a new layer's
    (random, or zero where the layer starts at zero) and every weight from a new channel into an
    old one is zero, so the old channels, and hence the outputs, are unchanged (function-preserving
    widening, Chen, Goodfellow & Shlens 2016, "Net2Net") while the new ones learn."""
    allowed = {"features", "width", "blocks", "per_scale"}
    if set(changes) - allowed:
        raise ValueError(f"a lossless head can only grow its {sorted(allowed)}, not {sorted(set(changes) - allowed)}")
    cfg = dataclasses.replace(head.config, **changes)  # type: ignore[arg-type]
    if head.config.features and cfg.features != head.config.features:
        raise ValueError(f"this head already reads {head.config.features} feature channels")
    if head.config.per_scale and not cfg.per_scale:
        raise ValueError("a head with a network per scale cannot share one again")
    if cfg.width < head.config.width or cfg.blocks < head.config.blocks:
        raise ValueError(f"a head can only grow: width {head.config.width} -> {cfg.width}, blocks {head.config.blocks} -> {cfg.blocks}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        new = LosslessHead(cfg).to(head.inp.weight.dtype)
    state = new.state_dict()
    for name, old in head.state_dict().items():
        t = state[name]  # a new layer's initial values; the old entries are copied over them
        t[tuple(slice(0, n) for n in old.shape)] = old
        if t.dim() == 4:
            t[: old.shape[0], old.shape[1]:] = 0.0  # new input channels into old outputs
    if cfg.per_scale and not head.config.per_scale:
        for name in state:
            if name.startswith("nets."):
                state[name] = state[name.split(".", 2)[2]].clone()  # "nets.i.inp.weight" <- "inp.weight"
    new.load_state_dict(state)
    return new.train(head.training)
