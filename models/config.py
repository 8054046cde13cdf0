"""Model configurations: one frozen dataclass and named presets.

A preset overrides only what differs from the defaults. Nothing here reads argv, files or the
environment: a test can build any number of configurations in one process.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a K-level ssVAE (thesis §5.2.4, eq. 5.4); ``levels=0`` is the plain VAE.

    Image pyramid: ``y_{K+1} = x`` and ``y_k = d(y_{k+1})``. ``u = z_0`` lives at 1/``latent_stride``
    of x's resolution and ``z_k`` at 1/``z_strides[k-1]`` (by default all latents share one
    resolution, as in the thesis: 16x8x8 for 32x32 and 64x64 images). Strides never grow with k.
    """

    levels: int = 1                      # K: number of compressed representations y_k
    transform: str = "downscale"         # d(.): "downscale" (2x box filter), "sketch", "grey"
    prior: str = "realnvp"               # p(u): "normal", "mog", "realnvp"
    latent_channels: int = 16
    latent_stride: int = 4               # x pixels per position of u (and of every z_k by default)
    z_strides: tuple[int, ...] = ()      # x pixels per position of z_1..z_K (empty: latent_stride)
    n_mix: int = 10                      # logistic mixture components of every pixel likelihood
    mog_components: int = 10             # for prior="mog"
    # network widths
    width: int = 64                      # channels of the low-resolution trunks
    growth: int = 32                     # DenseNet growth rate G (1x1 to 4G, 3x3 to G)
    dense_layers: int = 3                # dense layers per dense block
    head_width: int = 32                 # channels of the full-resolution stage of each decoder
    head_layers: int = 1                 # 3x3 convs at full resolution in each decoder
    dense_every_scale: bool = False      # thesis network: dense blocks at every resolution
    head_dense: bool = False             # thesis reference: a dense network at full resolution
    head_growth: int = 64
    head_blocks: int = 3
    head_block_layers: int = 5
    # RealNVP prior
    flow_hidden: int = 64
    flow_checker_in: int = 3             # checkerboard couplings before the squeeze
    flow_channel: int = 3                # channel-mask couplings after the squeeze
    flow_checker_out: int = 2            # checkerboard couplings after un-squeezing
    logvar_clamp: float = 7.0            # Gaussian log-variances clamped to [-7, 7] (§5.3)
    min_log_scale: float = -7.0          # logistic log-scales floored at -7
    log_scale_offset: float = -4.0       # added to the network's log-scales: start ~5 grey levels wide

    def __post_init__(self) -> None:
        if self.levels < 0 or self.levels > 6:
            raise ValueError(f"levels must be in 0..6, got {self.levels}")
        if self.transform not in ("downscale", "sketch", "grey"):
            raise ValueError(f"unknown transform {self.transform!r}")
        if self.prior not in ("normal", "mog", "realnvp"):
            raise ValueError(f"unknown prior {self.prior!r}")
        if isinstance(self.z_strides, list):
            object.__setattr__(self, "z_strides", tuple(self.z_strides))
        if self.z_strides and len(self.z_strides) != self.levels:
            raise ValueError(f"z_strides needs one stride per level ({self.levels}), got {self.z_strides}")
        sc = 2 if self.transform == "downscale" else 1
        strides = self.strides
        for k, s in enumerate(strides):
            need = sc ** (self.levels + 1 - max(k, 1))  # y_k's downscale: the prior (or q(u|y_1)) reads it
            if s & (s - 1) or s < need or s % need:
                raise ValueError(f"stride {s} of {'u' if k == 0 else f'z_{k}'} must be a power of two "
                                 f"and a multiple of {need}")
            if k and s > strides[k - 1]:
                raise ValueError("latent strides must not grow with the level")

    @property
    def strides(self) -> tuple[int, ...]:
        """x pixels per latent position of u, z_1, ..., z_K."""
        return (self.latent_stride,) + (self.z_strides or (self.latent_stride,) * self.levels)

    @property
    def pad_multiple(self) -> int:
        """Image sides must be a multiple of this (the flow squeezes the latent map by 2)."""
        return self.latent_stride * (2 if self.prior == "realnvp" else 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


#: the coding passes of a level's latent by its ``RDConfig.context`` value: none, a checkerboard,
#: the four 2x2 phases (``models.rd.coding_passes``)
CONTEXT_PASSES = (1, 2, 4)


#: the block side of a residual last level (``RDConfig.residual_last``): its latent stride
RESIDUAL_BLOCK = 4


@dataclass(frozen=True)
class RDConfig:
    """Architecture of the rate-distortion ssVAE (:class:`models.rd.RDSSVAE`).

    Level k (1-based) renders the image at 1/``render_strides[k-1]`` of x's size (the ssVAE's
    y_{K+1-k}; the last level renders x) with a latent at 1/``latent_strides[k-1]`` of x. The
    top-down state goes from each level's latent stride to the next one's, so latent strides may
    not grow from one level to the next. Levels after the first to render x refine it: their
    latents sit at a finer stride and add what x's coarser latents could not carry (``models.grow``
    adds one to a trained model).
    """

    kind: str = "rd"
    render_strides: tuple[int, ...] = (4, 2, 1)
    latent_strides: tuple[int, ...] = (32, 16, 8)
    latent_channels: tuple[int, ...] = (48, 48, 48)
    width: int = 64                              # N: channels of every transform (the encoder trunk: enc_width)
    emb_dim: int = 64                            # quality embedding
    # w_k of the distortion at each truncation. (0.5, 0.5, 1) until step 10,200 of the shipped run;
    # (0.1, 0.2, 1) since: in a paired probe level 3 kept or raised its PSNR at 3-7 % less rate and
    # levels 1-2 spent 12-21 % fewer bits for 0.05-0.13 dB (docs/training.md, session 6).
    level_weights: tuple[float, ...] = (0.1, 0.2, 1.0)
    lambda_min: float = 0.0009                   # lambda(q) = lambda_min * 2**q, q in [0, q_max]
    q_max: float = 8.0                           # sets the embedding's and the quantization step's scale
    # The qualities trained, hence the ones the codec accepts (may reach below 0 and above q_max).
    quality_range: tuple[float, float] = (0.0, 8.0)
    # Residual blocks after each level's merge (empty: none). They start as the identity, so a
    # trained model can grow them and go on training (``train_rd --grow``).
    merge_blocks: tuple[int, ...] = ()
    # Per level, 1: a checkerboard spatial context for the level's latent (He et al. 2021): half its
    # elements (the anchors) are coded first, the others under a prior that also sees the decoded
    # anchors. 2: four passes over the 2x2 phases, (0, 0), (1, 1), (0, 1), (1, 0), each under a
    # prior that sees the phases decoded before it (the four-part split of Li, Li & Lu 2023,
    # "Neural video compression with diverse contexts"); its third pass is the checkerboard's
    # second. Every context's output layer starts at zero, so a trained model can grow one, or
    # grow 1 into 2 (``train_rd --grow``, ``models.fit_context``). ``CONTEXT_PASSES[c]``: the
    # coding passes of a level with context c.
    context: tuple[int, ...] = ()
    # Residual blocks after each stage of the encoder trunk (strides 2, 4, ... max latent stride;
    # empty: none). They start as the identity, so a trained model can grow them (``train_rd
    # --grow``): more capacity for the posteriors without a wider trunk.
    enc_blocks: tuple[int, ...] = ()
    # Channels of the encoder trunk (0: ``width``). Only the encoder runs at this width, so a wider
    # trunk costs encoding time, not decoding time; ``train_rd --grow`` widens a trained one.
    enc_width: int = 0
    # The prior scale's floor: False, SCALE_MIN latent units (the models to session 12); True,
    # SCALE_MIN quantization steps at every q above q_max / 2, where a step is under one latent unit
    # (the same below). A latent unit's floor spans several steps at high q, so an element the model
    # leaves at its prior mean still costs 0.4 bits at q = 8 and 0.8 at q = 9 (docs/training.md,
    # session 13). Switching it on changes nothing at q <= q_max / 2 (``train_rd --grow``).
    floor_in_steps: bool = False
    # Per level, the kernel of its prior network's and merge's convolutions (empty: 3 everywhere).
    # A refinement level at a fine latent stride uses 1: its priors and merges run in float64 in
    # the codec (``codec/quantize.py``), where a 3x3 convolution at stride 4 would cost more than
    # the whole decode does today; its render head's transposed convolutions still see 5x5.
    kernels: tuple[int, ...] = ()
    # The last level codes x's residual: its latent is a linear transform (a 3x3 convolution on the
    # 4x4 blocks of x - x_hat_{L-1}, starting as an orthonormal DCT x colour basis) and its render
    # is x_hat_{L-1} plus the synthesis of the decoded latent; its prior still reads the top-down
    # state. A transform coder of what the hierarchy's last render missed, for the high rates.
    residual_last: bool = False

    def __post_init__(self) -> None:
        for name in ("render_strides", "latent_strides", "latent_channels", "level_weights", "merge_blocks",
                     "quality_range", "context", "enc_blocks", "kernels"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        n = len(self.render_strides)
        if not (len(self.latent_strides) == len(self.latent_channels) == len(self.level_weights) == n) or n < 1:
            raise ValueError("render_strides, latent_strides, latent_channels and level_weights need one entry per level")
        if not self.quality_range[0] < self.quality_range[1]:
            raise ValueError(f"quality_range must be (low, high) with low < high, got {self.quality_range}")
        if self.merge_blocks and (len(self.merge_blocks) != n or min(self.merge_blocks) < 0):
            raise ValueError("merge_blocks needs one count >= 0 per level (or none)")
        if self.context and (len(self.context) != n or not set(self.context) <= set(range(len(CONTEXT_PASSES)))):
            raise ValueError("context needs one 0, 1 or 2 per level (or none)")
        stages = self.encoder_stages
        if self.enc_blocks and (len(self.enc_blocks) != stages or min(self.enc_blocks) < 0):
            raise ValueError(f"enc_blocks needs one count >= 0 per encoder stage ({stages}) (or none)")
        if self.enc_width < 0:
            raise ValueError(f"enc_width must be >= 0 (0: width), got {self.enc_width}")
        if self.kernels and (len(self.kernels) != n or any(k not in (1, 3) for k in self.kernels)):
            raise ValueError("kernels needs one 1 or 3 per level (or none)")
        if self.residual_last and (n < 2 or self.render_strides[-2:] != (1, 1) or self.latent_strides[-1] != RESIDUAL_BLOCK):
            raise ValueError(f"a residual last level refines x (render strides ..., 1, 1) at latent stride {RESIDUAL_BLOCK}")
        if self.render_strides[-1] != 1:
            raise ValueError("the last level must render x at full size (render stride 1)")
        for k in range(n):
            r, s = self.render_strides[k], self.latent_strides[k]
            if r & (r - 1) or s & (s - 1) or s <= r:
                raise ValueError(f"level {k + 1}: strides must be powers of two with latent > render, got {r}, {s}")
            if k + 1 < n and not (r < self.latent_strides[k + 1] <= s):
                raise ValueError(f"level {k + 2}'s latent stride must lie between level {k + 1}'s latent and render strides")
            if k + 1 < n and self.render_strides[k + 1] * 2 != r and not (self.render_strides[k + 1] == r == 1):
                raise ValueError("each level must render at twice the resolution of the one before "
                                 "(or refine x: several levels may render at stride 1)")

    @property
    def levels(self) -> int:
        return len(self.render_strides)

    @property
    def encoder_stages(self) -> int:
        """Stride-2 stages of the encoder trunk: down to the coarsest latent stride."""
        return int(math.log2(max(self.latent_strides)))

    @property
    def encoder_width(self) -> int:
        """Channels of the encoder trunk (``enc_width``, or ``width`` when it is 0)."""
        return self.enc_width or self.width

    @property
    def pad_multiple(self) -> int:
        return max(self.latent_strides)

    def kernel(self, k: int) -> int:
        """The kernel of level ``k``'s (0-based) prior network and merge (``kernels``)."""
        return self.kernels[k] if self.kernels else 3

    def lam(self, q: float) -> float:
        """lambda for quality ``q``: the weight of 255^2 * MSE against bits per pixel."""
        return self.lambda_min * 2.0 ** q

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RDConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown RD model config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class LosslessConfig:
    """Architecture of the lossless head (:class:`models.lossless.LosslessHead`)."""

    kind: str = "lossless"
    width: int = 32                              # channels of the half-resolution network
    blocks: int = 2                              # residual blocks
    depth: int = 2                               # scales of the multi-resolution split below x (0: x's 2x2 phases only)
    # Channels of the decoder features the head reads (0: none): the RD model's final render head's
    # stage inputs (models.exact_render), one per scale of the split, through a 1x1 convolution
    # that starts at zero, so a trained head can grow them (``train_lossless --grow``).
    features: int = 0
    # One network per scale of the split (True) or one shared by every scale, told the scale by a
    # one-hot input (False). Per scale costs no decode time (each stage runs one network either
    # way); a shared head grows into one (``train_lossless --grow '{"per_scale": true}'``).
    per_scale: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LosslessConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown lossless head config keys: {sorted(unknown)}")
        return cls(**d)


def _preset(base: ModelConfig, **changes: Any) -> ModelConfig:
    return dataclasses.replace(base, **changes)


_DEFAULT = ModelConfig()

#: Thesis reference sizes for CIFAR-10 (Table 7.2 "ssVAE"): 32x32 x, 16x16 y, latents 16x8x8,
#: a dense network of 3 blocks x 5 layers (growth 64) at full resolution.
THESIS = _preset(_DEFAULT, levels=1, latent_stride=4, width=128, growth=64, dense_layers=4,
                 dense_every_scale=True, head_width=100, head_dense=True, head_growth=64, head_blocks=3, head_block_layers=5,
                 flow_hidden=128)
#: Thesis "VAE + RealNVP" (Tables 7.1/7.2) at the same sizes.
THESIS_VAE = _preset(THESIS, levels=0)
#: Table 7.1 baselines.
THESIS_VAE_NORMAL = _preset(THESIS_VAE, prior="normal")
THESIS_VAE_MOG = _preset(THESIS_VAE, prior="mog")
#: The codec default: the thesis' building blocks, decoding within the MAC budget of megapixel
#: images (design doc §3.6): two 2x-downscale levels, light full-res heads, and each latent at
#: stride 4 of the image it explains (u: y_1 = x/4; z_1: y_2 = x/2; z_2: x), so every level adds
#: detail a progressive decoder can show.
CODEC = _preset(_DEFAULT, levels=2, latent_stride=16, z_strides=(8, 4), width=64, growth=32,
                dense_layers=3, head_width=32, head_layers=1, n_mix=5, flow_hidden=64)
#: A small CIFAR-10 model that trains on 2 CPU cores.
CIFAR_SMALL = _preset(_DEFAULT, levels=1, latent_stride=4, width=64, growth=32, dense_layers=3,
                      dense_every_scale=True, head_width=48, head_layers=2, n_mix=10)

PRESETS: dict[str, ModelConfig] = {
    "thesis": THESIS,
    "thesis-vae": THESIS_VAE,
    "thesis-vae-normal": THESIS_VAE_NORMAL,
    "thesis-vae-mog": THESIS_VAE_MOG,
    "codec": CODEC,
    "cifar-small": CIFAR_SMALL,
}


def get_preset(name: str) -> ModelConfig:
    """Return a named configuration; unknown names are a clear error."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}") from None
