"""The rate-distortion ssVAE: the self-supervised hierarchy of the thesis (ch. 5-6) trained for
rate + lambda * distortion at every truncation point, with one model for every rate.

The ssVAE's deterministic representations are the downscales y_K (coarsest) ... y_1 of x
(thesis §5.2.5). Level 1 codes a latent z_1 at the coarsest latent stride and renders y_K; level
k+1 codes z_{k+1} under a prior conditioned on everything decoded so far (the top-down state,
which holds z_1..z_k: the ssVAE's p(z_{k+1} | y_k, z_k), eq. 5.4) and renders the next finer
image; the last level renders x. As in QRes-VAE / QARV (Duan et al. 2023), one bottom-up encoder
trunk gives the posterior its features at every latent stride, and one top-down state is refined
by each latent in turn; each level's render is its own light head on that state, so a decoder
that stops after level k runs that head alone. Training minimises

    L = sum_k R_k + lambda * 255^2 * sum_k w_k * MSE(up(x_hat_k), x)

with R_k the bits per pixel of x of level k's latents under their conditional Gaussian prior
convolved with U(-1/2, 1/2). This is the beta-ELBO of the same hierarchy with a uniform posterior of
width 1 and a Gaussian pixel likelihood whose variance is set by lambda (Balle et al. 2018,
"Variational image compression with a scale hyperprior"; Yang, Mandt & Theis 2023, "An
introduction to neural data compression", §3), so the model stays an ssVAE. The quantization
follows Minnen & Singh 2020 (noise for the rate, straight-through rounding around the prior mean
for the decoder), the coarse-to-fine latent hierarchy QRes-VAE / QARV (Duan et al. 2023), and
lambda enters every transform as continuous gain units (Cui et al. 2021) driven by an embedding
of the quality q, lambda = lambda_min * 2^q.

Past the last level that renders x, a *residual level* (``RDConfig.residual_last``) may code
x - x_hat_L in 4x4 blocks through a learned linear transform that starts as a DCT (the transform
coding of classical codecs, Goyal 2001, as a last ssVAE level: its prior still reads the top-down
state): the hierarchy's latents carry about 35 dimensions per 8x8 block, too few for the high
rates (docs/training.md, sessions 17 and 21).

:meth:`RDSSVAE.top_down` is the single top-down pass: training, :meth:`RDSSVAE.forward`, and the
codec's encoder and decoder (``codec/``) all run it, differing only in how a level's latent is
quantized (a :class:`Quantizer`).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CONTEXT_PASSES, RESIDUAL_BLOCK, RDConfig
from .exact_render import exact_render, exact_residual_render
from .rd_layers import (SCALE_MAX, SCALE_MIN, GDN, Gain, QualityEmbedding, ResBlock, conv, deconv, deconv_subpixel,
                        gaussian_bits, scale_from_raw)


LATENT_INIT_GAIN = 40.0
#: a residual level's starting latent gain: its quantization step is then about 45 / 2^((q - 4) / 2)
#: 8-bit levels per coefficient (32 at q = 5, 8 at q = 9), near the high-rate optimum
#: sqrt(26 / lambda(q)) of a uniform quantizer under R + lambda * 255^2 * MSE
RESIDUAL_INIT_GAIN = 5.7


def residual_basis(block: int = RESIDUAL_BLOCK) -> Tensor:
    """(3 block^2, 3 block^2) orthonormal rows over ``pixel_unshuffle(x, block)``'s channels
    (c * block^2 + dy * block + dx): the 2-D DCT-II of a block times an orthonormal colour
    transform (luma (1, 1, 1) / sqrt 3, chroma (1, 0, -1) / sqrt 2 and (1, -2, 1) / sqrt 6),
    ordered by frequency u + v, then u, then colour: the starting transform of a residual level
    (``RDConfig.residual_last``), as the block transforms of classical codecs."""
    n = torch.arange(block, dtype=torch.float64)
    dct = torch.stack([torch.cos(math.pi * (n + 0.5) * u / block) * math.sqrt((1 if u == 0 else 2) / block) for u in range(block)])
    colour = torch.tensor([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=torch.float64)
    colour = colour / colour.norm(dim=1, keepdim=True)
    rows = []
    for u, v, j in sorted(((u, v, j) for u in range(block) for v in range(block) for j in range(3)),
                          key=lambda t: (t[0] + t[1], t[0], t[2])):
        rows.append(torch.einsum("c,y,x->cyx", colour[j], dct[u], dct[v]).reshape(-1))
    return torch.stack(rows).float()


def upsample(img: Tensor, factor: int) -> Tensor:
    """The one upsampler of renders: bicubic by ``factor`` (identity for 1). Level k's display
    image and the image its training distortion is measured on are both made with it."""
    if factor == 1:
        return img
    return F.interpolate(img, scale_factor=factor, mode="bicubic", align_corners=False)


def anchor_mask(h: int, w: int, device: torch.device | str = "cpu") -> Tensor:
    """The checkerboard's anchors, (1, 1, h, w) bool: the elements with (i + j) even, coded first
    (He et al. 2021, "Checkerboard context model for efficient learned image compression")."""
    i = torch.arange(h, device=device).view(-1, 1)
    j = torch.arange(w, device=device).view(1, -1)
    return ((i + j) % 2 == 0).view(1, 1, h, w)


#: the 2x2 phases (row parity, column parity) of a four-pass context level, in coding order
FOUR_PASS_ORDER = ((0, 0), (1, 1), (0, 1), (1, 0))


def coding_passes(passes: int, h: int, w: int, device: torch.device | str = "cpu") -> list[Tensor]:
    """The masks (1, 1, h, w) of a level's coding passes, in order: the checkerboard's anchors and
    the rest (``passes`` = 2, He et al. 2021), or the four 2x2 phases of ``FOUR_PASS_ORDER``
    (``passes`` = 4, the four-part split of Li, Li & Lu 2023). Their first two together are the
    checkerboard's anchors, so the third pass sees what the checkerboard's second does."""
    if passes == 2:
        a = anchor_mask(h, w, device)
        return [a, ~a]
    if passes != 4:
        raise ValueError(f"a level is coded in 1, 2 or 4 passes, not {passes}")
    i = torch.arange(h, device=device).view(-1, 1) % 2
    j = torch.arange(w, device=device).view(1, -1) % 2
    return [((i == r) & (j == c)).view(1, 1, h, w) for r, c in FOUR_PASS_ORDER]


class Quantizer(Protocol):
    """How :meth:`RDSSVAE.top_down` turns level ``k``'s latent into the decoder's z_hat, given
    the prior's (mu, sigma). ``latent`` is None on the decoding side (the quantizer reads the
    symbols from a stream). Returns z_hat and the bits it costs (elementwise, or None).

    A level with a spatial context (``RDConfig.context``) calls it once per coding pass
    (:func:`coding_passes`), with ``where`` (a bool mask broadcastable to ``mu``): first for the
    checkerboard's anchors, then for the other elements under a prior that has seen the anchors
    (four passes: the 2x2 phases in turn, each under a prior that has seen the phases before it).
    Only the masked elements of z_hat and of the bits are used, so a quantizer may compute every
    element (training does); a coder codes only the masked ones, in this order."""

    def __call__(self, k: int, latent: Tensor | None, mu: Tensor, sigma: Tensor,
                 where: Tensor | None = None) -> tuple[Tensor, Tensor | None]: ...


def training_quantizer(k: int, latent: Tensor | None, mu: Tensor, sigma: Tensor,
                       where: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mixed quantization (Minnen & Singh 2020): the rate of ``latent + U(-1/2, 1/2)``; the decoder
    sees ``mu + round(latent - mu)`` with a straight-through gradient."""
    assert latent is not None
    noisy = latent + torch.empty_like(latent).uniform_(-0.5, 0.5)
    bits = gaussian_bits(noisy, mu, sigma)
    hard = mu + torch.round(latent - mu)
    return latent + (hard - latent).detach(), bits


def rounding_quantizer(k: int, latent: Tensor | None, mu: Tensor, sigma: Tensor,
                       where: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Test-time quantization, ``mu + round(latent - mu)``, and its exact bits under the prior."""
    assert latent is not None
    hard = mu + torch.round(latent - mu)
    return hard, gaussian_bits(hard, mu, sigma)


@dataclass
class LevelOutput:
    """What level ``k`` (0-based) of a top-down pass produced."""

    k: int
    z_hat: Tensor
    bits: Tensor | None          # elementwise bits of z_hat, when the quantizer reports them
    render: Tensor | None        # x_hat_k at 1/render_stride of x, in [-1/2, 1/2] (unclamped)
    # with precise_render: the render head's stage inputs, coarse to fine (exact_render's features)
    features: list[Tensor] | None = None


def _ups(n: int, c_in: int, c_out: int, emb: int) -> tuple[nn.ModuleList, nn.ModuleList, nn.ModuleList]:
    """``n`` 2x upsampling stages (IGDN, gain, transposed conv), the last one to ``c_out`` channels."""
    ups = nn.ModuleList([deconv(c_in, c_in if i + 1 < n else c_out) for i in range(n)])
    return ups, nn.ModuleList([GDN(c_in, inverse=True) for _ in range(n)]), nn.ModuleList([Gain(emb, c_in) for _ in range(n)])


def _run_ups(h: Tensor, emb: Tensor, ups: nn.ModuleList, gdns: nn.ModuleList, gains: nn.ModuleList,
             subpixel: bool = False) -> Tensor:
    for u, g, a in zip(ups, gdns, gains):
        h = a(g(h), emb)
        h = deconv_subpixel(u, h) if subpixel else u(h)
    return h


def _context_layers(M: int, N: int, E: int) -> tuple[nn.Sequential, Gain, nn.Conv2d]:
    """A context network: decoded latents (M channels, zero where not yet decoded) -> a change of
    the prior's (mu, raw scale) at the elements still to code. Its output layer starts at zero,
    so a grown context starts as the identity."""
    net = nn.Sequential(conv(M, N, 5), nn.GELU(), conv(N, N, 1), nn.GELU())
    gain = Gain(E, N)
    head = conv(N, 2 * M, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return net, gain, head


class RDLevel(nn.Module):
    """One level of the top-down path: posterior head (encoder features at the level's latent
    stride + the top-down state -> latent), conditional prior (top-down state -> mu, sigma; a
    learned per-channel Gaussian for level 1), merge (the quantized latent into the state), the
    render head (state -> the level's image) and the transition (state -> the next level's
    latent stride)."""

    def __init__(self, cfg: RDConfig, k: int) -> None:
        super().__init__()
        N, M, E, K = cfg.width, cfg.latent_channels[k], cfg.emb_dim, cfg.kernel(k)
        r, s = cfg.render_strides[k], cfg.latent_strides[k]
        self.k, self.first = k, k == 0
        self.residual = cfg.residual_last and k == cfg.levels - 1
        self.floor_in_steps = cfg.floor_in_steps
        ctx = 0 if self.first else N
        if self.residual:
            self.to_latent = conv(3 * s * s, M)
            self.synth = conv(M, 3 * s * s)
        else:
            self.to_latent = nn.Sequential(conv(cfg.encoder_width + ctx, N), nn.GELU(), conv(N, M))
        self.latent_gain = Gain(E, M)
        if self.first:
            self.prior_table = nn.Linear(E, 2 * M)
            nn.init.zeros_(self.prior_table.weight)
            nn.init.constant_(self.prior_table.bias, 0.0)
        else:
            self.prior_net = nn.Sequential(conv(N, N, K), nn.GELU(), conv(N, N, K), nn.GELU())
            self.prior_gain = Gain(E, N)
            self.prior_head = conv(N, 2 * M, 1)
        #: coding passes of this level's latent (:func:`coding_passes`)
        self.context_passes = CONTEXT_PASSES[cfg.context[k] if cfg.context else 0]
        self.has_context = self.context_passes > 1
        # "ctx": the checkerboard's anchors -> the rest (the third pass of four); "ctx_diag": phase
        # (0, 0) -> phase (1, 1); "ctx_last": the first three phases -> phase (1, 0)
        for name in {1: (), 2: ("ctx",), 4: ("ctx", "ctx_diag", "ctx_last")}[self.context_passes]:
            net, gain, head = _context_layers(M, N, E)
            setattr(self, f"{name}_net", net)
            setattr(self, f"{name}_gain", gain)
            setattr(self, f"{name}_head", head)
        self.latent_ungain = Gain(E, M)
        # (the order in which parameters are made is the order of a checkpoint's optimizer state)
        if not self.residual:
            self.merge = nn.Sequential(conv(M + ctx, N, K), nn.GELU(), conv(N, N, K))
            self.merge_res = nn.Sequential(*[ResBlock(N) for _ in range(cfg.merge_blocks[k] if cfg.merge_blocks else 0)])
            self.head, self.head_gdn, self.head_gain = _ups(int(math.log2(s // r)), N, 3, E)
        nxt = cfg.latent_strides[k + 1] if k + 1 < cfg.levels else s
        self.trans, self.trans_gdn, self.trans_gain = _ups(int(math.log2(s // nxt)), N, N, E)
        if self.residual:
            self._init_residual(M)
            return
        # Latents start about one quantization step wide (a fresh posterior head outputs ~0.03):
        # smaller ones round to the prior mean, carry nothing, and the rate term then collapses them.
        nn.init.constant_(self.latent_gain.lin.bias, math.log(LATENT_INIT_GAIN))

    def _init_residual(self, M: int) -> None:
        """A residual level starts as a working transform coder: analysis = the first M rows of
        :func:`residual_basis` times RESIDUAL_INIT_GAIN, synthesis its transpose over that gain (the
        centre taps of 3x3 convolutions, the rest zero), and a prior of mean 0 whose scale is the
        same for every element until training makes it read the state."""
        basis = residual_basis(int(math.isqrt(self.to_latent.in_channels // 3)))[:M]
        with torch.no_grad():
            self.to_latent.weight.zero_()
            self.to_latent.weight[:, :, 1, 1] = basis
            self.to_latent.bias.zero_()
            self.synth.weight.zero_()
            self.synth.weight[:, :, 1, 1] = basis.t() / RESIDUAL_INIT_GAIN
            self.synth.bias.zero_()
            self.prior_head.weight.zero_()
            self.prior_head.bias.zero_()
            self.prior_head.bias[M:] = -1.5  # scale softplus(-1.5) ~ 0.2 latent units: a residual coefficient's size
        nn.init.constant_(self.latent_gain.lin.bias, math.log(RESIDUAL_INIT_GAIN))

    def analysis(self, feat: Tensor, ctx: Tensor | None, emb: Tensor) -> Tensor:
        """The latent (before quantization) from the encoder's features at this stride and the
        top-down state ``ctx`` (None at level 1)."""
        h = feat if ctx is None else torch.cat([feat, ctx], dim=1)
        return self.latent_gain(self.to_latent(h), emb)

    def prior_params(self, ctx: Tensor | None, emb: Tensor, shape: tuple[int, int]) -> Tensor:
        """The prior's raw parameters (mu, raw scale) of every latent element, from the top-down
        state (in the dtype of this module: the codec runs a float64 copy and snaps the result to
        fixed tables; see ``codec/quantize.py``)."""
        if self.first:
            return self.prior_table(emb)[:, :, None, None].expand(-1, -1, *shape)
        assert ctx is not None
        return self.prior_head(self.prior_gain(self.prior_net(ctx), emb))

    def context_params(self, anchors: Tensor, emb: Tensor, name: str = "ctx") -> Tensor:
        """The change of :meth:`prior_params` that the decoded anchors (z_hat at the anchors, zero
        elsewhere) bring to the other elements (the checkerboard context, He et al. 2021), or with
        ``name`` another pass's context network (:meth:`pass_params`)."""
        net, gain, head = (getattr(self, f"{name}_{part}") for part in ("net", "gain", "head"))
        return head(gain(net(anchors), emb))

    def pass_params(self, i: int, p: Tensor, p_before: Tensor, decoded: Tensor, emb: Tensor) -> Tensor:
        """The raw prior parameters of coding pass ``i`` >= 1 (:func:`coding_passes`) from the
        context-free ones ``p``, those of pass i - 1 (``p_before``) and the latents decoded so far
        (``decoded``: z_hat in latent units, zero where not yet decoded). Four passes: pass 1 sees
        phase (0, 0) through ``ctx_diag``, pass 2 the checkerboard's anchors through ``ctx`` (as a
        checkerboard level's second pass), pass 3 adds what ``ctx_last`` draws from the first three
        phases to pass 2's."""
        if self.context_passes == 2 or i == 2:
            return p + self.context_params(decoded, emb)
        if i == 1:
            return p + self.context_params(decoded, emb, "ctx_diag")
        return p_before + self.context_params(decoded, emb, "ctx_last")

    def mu_sigma(self, p: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, sigma) in units of the quality's quantization step ``step`` (z / step is what is
        rounded and coded) from raw prior parameters, sigma clamped to the coder's table. The
        floor of sigma is SCALE_MIN latent units, or with ``RDConfig.floor_in_steps`` SCALE_MIN
        steps wherever a step is below one latent unit (high q)."""
        mu, raw = p.chunk(2, dim=1)
        floor = SCALE_MIN * step.clamp(max=1.0) if self.floor_in_steps else SCALE_MIN
        return mu / step, (scale_from_raw(raw, floor) / step).clamp(SCALE_MIN, SCALE_MAX)

    def update(self, z_hat: Tensor, ctx: Tensor | None, emb: Tensor) -> Tensor:
        """The top-down state after this level's latent: ``ctx + merge(z_hat, ctx)`` (the first
        level starts the state from its latent alone), then the level's residual blocks. A
        residual level leaves the state as it is (nothing reads it after the last level)."""
        if self.residual:
            assert ctx is not None
            return ctx
        h = self.latent_ungain(z_hat, emb)
        if ctx is None:
            return self.merge_res(self.merge(h))
        return self.merge_res(ctx + self.merge(torch.cat([h, ctx], dim=1)))

    def render(self, state: Tensor, emb: Tensor) -> Tensor:
        """The level's image (x_hat_k at 1/render_stride of x, in [-1/2, 1/2], unclamped). Outside
        training its transposed convs run as sub-pixel convs (no prior reads a render, so their
        different float rounding cannot desynchronise a stream)."""
        return _run_ups(state, emb, self.head, self.head_gdn, self.head_gain, subpixel=not self.training)

    def render_residual(self, base: Tensor, z_hat: Tensor, emb: Tensor) -> Tensor:
        """A residual level's image: the level before's render ``base`` (at x's size) plus the
        synthesis of its decoded latent ``z_hat`` (latent units)."""
        return base + F.pixel_shuffle(self.synth(self.latent_ungain(z_hat, emb)), RESIDUAL_BLOCK)

    def residual_features(self, x: Tensor, base: Tensor) -> Tensor:
        """A residual level's analysis input: the blocks of x - ``base`` as channels."""
        return F.pixel_unshuffle(x - base, RESIDUAL_BLOCK)

    def transition(self, state: Tensor, emb: Tensor, subpixel: bool = False) -> Tensor:
        """The state carried to the next level's latent stride; ``subpixel``: its transposed convs
        as sub-pixel convs (:func:`deconv_subpixel`, about 2x faster on a CPU in float64; the same
        numbers up to rounding, so encoder and decoder must agree on it: format version 6 does)."""
        return _run_ups(state, emb, self.trans, self.trans_gdn, self.trans_gain, subpixel=subpixel)


class RDSSVAE(nn.Module):
    """The progressive rate-distortion ssVAE (module docstring)."""

    def __init__(self, config: RDConfig) -> None:
        super().__init__()
        self.config = config
        C, E = config.encoder_width, config.emb_dim
        self.embed = QualityEmbedding(E, q_range=config.q_max)
        n_down = config.encoder_stages
        self.enc = nn.ModuleList([conv(3 if i == 0 else C, C, 5, 2) for i in range(n_down)])
        self.enc_gdn = nn.ModuleList([GDN(C) for _ in range(n_down)])
        self.enc_gain = nn.ModuleList([Gain(E, C) for _ in range(n_down)])
        self.enc_res = nn.ModuleList([nn.Sequential(*[ResBlock(C) for _ in range(config.enc_blocks[i] if config.enc_blocks else 0)])
                                      for i in range(n_down)])
        self.levels = nn.ModuleList([RDLevel(config, k) for k in range(config.levels)])

    @property
    def n_levels(self) -> int:
        return self.config.levels

    def lam(self, q: Tensor) -> Tensor:
        return self.config.lambda_min * torch.pow(2.0, q)

    def quant_step(self, q: Tensor) -> Tensor:
        """The quantization step of quality ``q`` in latent units: 2^((q_mid - q) / 2), i.e.
        proportional to lambda^(-1/2), the high-rate optimum for an MSE-weighted Gaussian (as
        variable-rate coders with a quantization bin size per lambda, Choi et al. 2019). It gives
        every q its own rate from the first step; the gain units learn the rest."""
        return torch.pow(2.0, (self.config.q_max / 2 - q.double()) / 2).to(q.dtype if q.is_floating_point() else torch.float32)

    def encoder_features(self, x: Tensor, emb: Tensor) -> dict[int, Tensor]:
        """The bottom-up pass: features of x at every latent stride (one shared trunk, as the
        encoders of QRes-VAE / QARV, Duan et al. 2023)."""
        want = set(self.config.latent_strides)
        feats: dict[int, Tensor] = {}
        h, stride = x, 1
        for c, g, a, res in zip(self.enc, self.enc_gdn, self.enc_gain, self.enc_res):
            h, stride = res(a(g(c(h)), emb)), stride * 2
            if stride in want:
                feats[stride] = h
        return feats

    def top_down(self, q: Tensor, quantize: Quantizer, x: Tensor | None = None,
                 size: tuple[int, int] | None = None, levels: int | None = None,
                 render: bool | Callable[[int], bool] = True,
                 deterministic: Callable[[], object] | None = None,
                 precise: RDSSVAE | None = None, precise_render: bool = False,
                 subpixel_transitions: bool = False) -> Iterator[LevelOutput]:
        """The one top-down pass, level by level (yields after each).

        ``x``: the padded image in [-1/2, 1/2] (encoder and training) or None (decoder, which then
        needs ``size``, the padded (H, W)). ``render``: whether to render level k (renders are
        independent heads on the top-down state: no later level needs one). ``deterministic``: a
        context-manager factory wrapped around the encoder's trunk and posteriors (the codec runs
        it on one thread, so the file's bytes do not depend on the thread count) and, without
        ``precise``, around everything a later prior depends on, but never around the renders.
        ``precise``: a float64 copy of this model that computes everything a later prior depends
        on (the priors, the merges, the transitions): float32 kernels round differently on other
        CPU kinds and thread counts, and at float64 the snapped tables do not notice (so that path
        may use every thread). The trunk, the posteriors and the renders, which no prior reads,
        stay in this model's float32, on this model's device (``precise`` may live on another:
        the codec keeps it on the CPU, so a stream encoded on a GPU decodes on any CPU).
        ``precise_render``: render from ``precise``'s state in exact integer arithmetic
        (:func:`models.exact_render.exact_render`), so encoder and decoder round the render to the
        same 8-bit image on any machine: the lossless head codes x given it.
        ``subpixel_transitions``: run the transitions between levels as sub-pixel convolutions
        (:meth:`RDLevel.transition`); the codec does from format version 6 on.
        """
        cfg = self.config
        if x is not None:
            size = (x.shape[-2], x.shape[-1])
        assert size is not None
        H, W = size
        if H % cfg.pad_multiple or W % cfg.pad_multiple:
            raise ValueError(f"image sides must be multiples of {cfg.pad_multiple}, got {H}x{W}")
        n = cfg.levels if levels is None else levels
        guard = deterministic or contextlib.nullcontext
        det = precise if precise is not None else self
        det_guard = guard if precise is None else contextlib.nullcontext
        dev = next(self.parameters()).device
        with guard():  # the analysis too: the file's bytes do not depend on the thread count
            emb = self.embed(q.to(dev))
            det_emb = det.embed(q.double()) if precise is not None else emb
            step = self.quant_step(q.double() if precise is not None else q).view(-1, 1, 1, 1)
            step_here = step.to(dev, torch.float32)
            feats = self.encoder_features(x, emb) if x is not None else {}
        want = render if callable(render) else (lambda k: bool(render))
        ctx: Tensor | None = None  # the top-down state at level k's latent stride (det's dtype)
        prev_state = torch.empty(0)  # level k - 1's state, before its transition
        base = torch.empty(0)  # level k - 1's render, when level k is a residual level
        base_exact, base_features = base, None  # with precise_render: as exact_render drew it, and its features
        for k in range(n):
            lvl, det_lvl = self.levels[k], det.levels[k]
            s = cfg.latent_strides[k]
            with det_guard():
                p = det_lvl.prior_params(ctx, det_emb, (H // s, W // s))
                mu, sigma = det_lvl.mu_sigma(p, step)
            latent = None
            if x is not None:
                with guard():
                    here = None if ctx is None else ctx.to(dev, torch.float32)
                    feat = feats[s] if not lvl.residual else lvl.residual_features(x, base)
                    latent = (lvl.analysis(feat, None if lvl.residual else here, emb) / step_here).to(mu.device)
            if not det_lvl.has_context:
                z_hat, bits = quantize(k, latent, mu, sigma)
            else:
                masks = coding_passes(det_lvl.context_passes, H // s, W // s, mu.device)
                p_i, decoded = p, None
                for i, m in enumerate(masks):
                    if i > 0:
                        with det_guard():
                            p_i = det_lvl.pass_params(i, p, p_i, decoded, det_emb)
                            mu, sigma = det_lvl.mu_sigma(p_i, step)
                    z_i, bits_i = quantize(k, latent, mu, sigma, m)
                    if i == 0:
                        z_hat, bits = z_i, bits_i
                    else:
                        z_hat = torch.where(m, z_i, z_hat)
                        bits = None if bits is None or bits_i is None else torch.where(m, bits_i, bits)
                    if i + 1 < len(masks):
                        with det_guard():
                            decoded = torch.where(m, z_i.to(step.dtype) * step, 0.0 if decoded is None else decoded)
            with det_guard():
                state = det_lvl.update(z_hat.to(step.dtype) * step, ctx, det_emb)
            features: list[Tensor] | None = None
            base_next = k + 1 < n and self.levels[k + 1].residual  # the next level codes x minus this render
            if lvl.residual:
                if not want(k):
                    out = None
                elif precise_render and precise is not None:  # the level before's exact render and its features
                    out, features = exact_residual_render(det_lvl, base_exact, z_hat.to(step.dtype) * step, det_emb), base_features
                else:
                    out = lvl.render_residual(base, z_hat.to(dev, torch.float32) * step_here, emb)
            elif not (want(k) or base_next):
                out = None
            elif precise_render and precise is not None:
                # a refinement level's head starts at a finer stride: the coarser feature is the state
                # its transition read (what the head of the level before it read first)
                features = [prev_state.float()] if k and cfg.render_strides[k] == cfg.render_strides[k - 1] else []
                out = exact_render(det_lvl, state, det_emb, features)
            else:
                # an encoder's base render decides the next latents, so it runs like the analysis
                with guard() if base_next and x is not None else contextlib.nullcontext():
                    out = lvl.render(state.to(dev, torch.float32), emb)
            if base_next:
                base, base_exact, base_features = out.to(dev, torch.float32), out, features
                out, features = (out, features) if want(k) else (None, None)
            if k + 1 < n:
                prev_state = state
                with det_guard():
                    ctx = det_lvl.transition(state, det_emb, subpixel_transitions)
            yield LevelOutput(k, z_hat, bits, out, features)

    def forward(self, x: Tensor, q: Tensor, weight: Tensor | None = None,
                rate_weights: tuple[float, ...] | None = None) -> dict[str, Tensor]:
        """Training terms for a batch ``x`` (uint8 or float in [0, 255], sides multiples of
        ``pad_multiple``) at qualities ``q`` (one per image): per level the bits per pixel of x
        (``bpp_k``) and the MSE of the upsampled render against x on [0, 1] (``mse_k``), and the
        loss ``sum_k beta_k bpp_k + lambda(q) * 255^2 * sum_k w_k mse_k``, averaged over the batch
        (with ``weight``, one per image, the weighted mean: :func:`rate_normalised_weight`).
        ``rate_weights``: beta_k (default 1), below 1 only while a newly grown level's rate is
        warmed up (the KL warm-up of VAE training, thesis §7, here for one level's rate:
        :func:`rate_warmup_weights`)."""
        cfg = self.config
        xf = x.float() / 255.0 - 0.5
        pixels = xf.shape[-2] * xf.shape[-1]
        terms: dict[str, Tensor] = {}
        dist = torch.zeros(len(x), device=x.device)
        rate = torch.zeros(len(x), device=x.device)
        for o in self.top_down(q, training_quantizer if self.training else rounding_quantizer, xf):  # renders every level
            assert o.bits is not None and o.render is not None
            bpp = o.bits.sum(dim=(1, 2, 3)) / pixels
            mse = (upsample(o.render, cfg.render_strides[o.k]) - xf).pow(2).mean(dim=(1, 2, 3))
            terms[f"bpp_{o.k + 1}"], terms[f"mse_{o.k + 1}"] = bpp, mse
            rate = rate + (bpp if rate_weights is None else rate_weights[o.k] * bpp)
            dist = dist + cfg.level_weights[o.k] * mse
        per_image = rate + self.lam(q) * 255.0 ** 2 * dist
        terms["loss"] = per_image.mean() if weight is None else (weight.to(per_image) * per_image).mean()
        return terms


def rate_normalised_weight(q: Tensor, slope: float, q_ref: float) -> Tensor:
    """Per-image loss weights ``2^(-slope * (q - q_ref))`` for a batch trained at qualities ``q``.

    A lambda-conditioned model shares its weights across rates, and a uniform draw of q lets the
    high rates set their direction: on training crops the gradient of one image's loss at q = 9
    is about 100 times that at q = -4 and 60 times that at q = 0 (docs/training.md, session 17),
    because lambda scales the distortion's gradient. An improvement of a rate's loss by e is worth
    e bits per pixel at that rate's distortion, i.e. a relative saving of e / R(q), and the
    BD-rate that the codec is judged by averages relative (log) savings. So weighting each
    image's loss by 1 / R(q) aims the shared training at the BD-rate; on training crops R(q) is
    close to ``2^(0.25 (q - 4))`` bpp over q = -4..9, hence ``slope`` 0.25 and ``q_ref`` 4 (weight
    1 at q = 4). Each rate's own optimum (its R + lambda D) is unchanged by a constant factor: only
    how the rates share the model moves."""
    return torch.pow(2.0, -slope * (q.float() - q_ref))


def rate_warmup_weights(levels: int, step: int, warmup: tuple[int, int, int] | None) -> tuple[float, ...] | None:
    """beta_k of :meth:`RDSSVAE.forward` at training step ``step``: 1 for every level except
    ``warmup`` = (level, start, end) (1-based level), whose rate weight rises linearly from 0 at step
    ``start`` to 1 at ``end``: the KL warm-up of Bowman et al. 2016 and Sønderby et al. 2016 (used by
    the thesis' ELBO models) for one level grown into a trained model, whose fresh latents cost far
    more than they buy before the rest of the model has learned to read them (docs/training.md,
    session 21, measures what it did and did not do)."""
    if warmup is None:
        return None
    level, start, end = warmup
    beta = min(1.0, max(0.0, (step - start) / max(end - start, 1)))
    return tuple(beta if k + 1 == level else 1.0 for k in range(levels))


def build_rd_model(config: RDConfig) -> RDSSVAE:
    return RDSSVAE(config)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of an MSE on [0, 1] images (-inf for an infinite MSE, NaN for NaN)."""
    if math.isnan(mse):
        return math.nan
    return 10.0 * math.log10(1.0 / max(mse, 1e-12)) if math.isfinite(mse) else -math.inf
