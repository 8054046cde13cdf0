"""The K-level Self-Supervised VAE (thesis §5.2, eq. 5.3 for K = 1 and eq. 5.4 in general);
``levels = 0`` is the VAE with a standard-normal, MoG or RealNVP prior (§5.1, Table 7.1).

Generative model  p(u) p(y_1|u) prod_k p(z_k | y_k, z_{k-1}) p(y_{k+1} | y_k, z_k),  z_0 = u
Inference model   q(u | y_1) prod_k q(z_k | y_{k+1}),  y_k = d(y_{k+1}),  y_{K+1} = x

::

    x ──d──> y_K ──d──> ... ──d──> y_1 ──q──> u ~ RealNVP prior
    │         │                     │         │
    q         └────────┐            └─p(y_1|u)┘
    v                  v
   z_K ──> p(z_K | y_K, z_{K-1}),  p(x | y_K, z_K)

Images of any size are replicate-padded to ``config.pad_multiple``; the padded pixels of x are
left out of RE_x, so the bound stays a bound on the likelihood of the true pixels (the padded
y_k are latent variables with a deterministic posterior, which adds no entropy term, §5.2.2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .distributions import (DiagonalGaussian, DiscretizedLogisticMixture, MixtureOfGaussiansPrior,
                            StandardNormalPrior)
from .flows import RealNVPPrior
from .networks import ConditionalPriorNet, PosteriorNet, SuperResDecoder, TopDecoder
from .transforms import make_transform, pad_to_multiple

PointEstimate = Literal["mean", "mode", "sample"]


@dataclass
class Latents:
    """Inferred (or chosen) latents of one batch: ``u`` and ``z[k-1]`` for z_k."""

    u: Tensor
    z: list[Tensor]


class SSVAE(nn.Module):
    """K-level ssVAE. ``forward`` returns the ELBO terms per image in nats."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.transform = make_transform(cfg.transform)
        K, S = cfg.levels, cfg.latent_stride
        st = cfg.strides
        self.levels = K
        sc = self.transform.scale
        #: downscale factor and channels of y_1, ..., y_K, y_{K+1} = x (index k-1 for y_k)
        self.image_down = [sc ** (K + 1 - k) for k in range(1, K + 2)]
        self.image_channels = [self.transform.out_channels] * K + [3]
        self.posterior_u = PosteriorNet(self.image_channels[0], S // self.image_down[0], cfg)
        self.prior_u: nn.Module
        if cfg.prior == "realnvp":
            self.prior_u = RealNVPPrior(cfg.latent_channels, cfg.flow_hidden, cfg.flow_checker_in,
                                        cfg.flow_channel, cfg.flow_checker_out)
        elif cfg.prior == "mog":
            self.prior_u = MixtureOfGaussiansPrior(cfg.latent_channels, cfg.mog_components)
        else:
            self.prior_u = StandardNormalPrior()
        self.decoder_y1 = TopDecoder(self.image_channels[0], S // self.image_down[0], cfg)
        self.posterior_z = nn.ModuleList(
            [PosteriorNet(self.image_channels[k], st[k] // self.image_down[k], cfg) for k in range(1, K + 1)])
        self.prior_z = nn.ModuleList(
            [ConditionalPriorNet(self.image_channels[k - 1], st[k] // self.image_down[k - 1], cfg, st[k - 1] // st[k])
             for k in range(1, K + 1)])
        self.decoder_y = nn.ModuleList(
            [SuperResDecoder(self.image_channels[k - 1], self.image_channels[k], st[k] // self.image_down[k - 1], sc, cfg)
             for k in range(1, K + 1)])

    # ----- building blocks (also the codec's API) ---------------------------------------------
    def pad(self, x: Tensor) -> Tensor:
        """Replicate-pad to a size the network accepts."""
        return pad_to_multiple(x, self.config.pad_multiple)

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        """The size :meth:`pad` gives an h x w image."""
        m = self.config.pad_multiple
        return -(-h // m) * m, -(-w // m) * m

    def pyramid(self, x: Tensor) -> list[Tensor]:
        """[y_1, ..., y_K, y_{K+1} = x] for a padded uint8 image."""
        h, w = x.shape[-2:]
        m = self.config.pad_multiple
        if h % m or w % m:
            raise ValueError(f"image {h}x{w} is not a multiple of {m}; pad it with model.pad() first")
        ys = [x]
        for _ in range(self.levels):
            ys.insert(0, self.transform(ys[0]))
        return ys

    def latent_shape(self, batch: int, h: int, w: int, level: int = 0) -> tuple[int, int, int, int]:
        """Shape of u (level 0) or z_level for a padded h x w image."""
        s = self.config.strides[level]
        return (batch, self.config.latent_channels, h // s, w // s)

    def q_u(self, y1: Tensor) -> DiagonalGaussian:
        """q(u | y_1)."""
        return DiagonalGaussian.from_params(self.posterior_u(y1), self.config.logvar_clamp)

    def q_z(self, k: int, y_next: Tensor) -> DiagonalGaussian:
        """q(z_k | y_{k+1}), k = 1..K."""
        return DiagonalGaussian.from_params(self.posterior_z[k - 1](y_next), self.config.logvar_clamp)

    def p_z_params(self, k: int, y_k: Tensor, z_prev: Tensor, float64: bool = False) -> Tensor:
        """Raw parameters (mu, log-variance) of p(z_k | y_k, z_{k-1}); ``float64`` evaluates the
        last layer in double precision (the codec snaps these to a grid)."""
        net = self.prior_z[k - 1]
        h = net.features(y_k, z_prev.float())
        return net.out.forward_float64(h) if float64 else net.out(h)

    def p_z(self, k: int, y_k: Tensor, z_prev: Tensor) -> DiagonalGaussian:
        """p(z_k | y_k, z_{k-1}), k = 1..K."""
        return DiagonalGaussian.from_params(self.p_z_params(k, y_k, z_prev), self.config.logvar_clamp)

    def p_y_params(self, k: int, y_prev: Tensor | None, z: Tensor, float64: bool = False) -> tuple[Tensor, Tensor]:
        """Raw mixture parameters and base image of p(y_{k+1} | y_k, z_k) (k = 0: p(y_1 | u));
        ``float64`` evaluates the last layer and the base image in double precision."""
        dtype = torch.float64 if float64 else torch.float32
        if k == 0:
            dec = self.decoder_y1
            h, _ = dec.features(z.float())
            base = dec.base_image(h, dtype)
        else:
            assert y_prev is not None
            dec = self.decoder_y[k - 1]
            h, _ = dec.features(y_prev, z.float())
            base = dec.base_image(y_prev, dtype)
        return (dec.head.out.forward_float64(h) if float64 else dec.head.out(h)), base

    def mixture(self, k: int, params: Tensor, base: Tensor) -> DiscretizedLogisticMixture:
        """The pixel mixture of level k (y_{k+1}; y_1 for k = 0) from its raw parameters."""
        return DiscretizedLogisticMixture(params, self.image_channels[k], self.config.n_mix, base,
                                          self.config.min_log_scale, self.config.log_scale_offset)

    def p_y(self, k: int, y_prev: Tensor | None, z: Tensor) -> DiscretizedLogisticMixture:
        """p(y_{k+1} | y_k, z_k) for k = 1..K, and p(y_1 | u) for k = 0 (``y_prev`` unused)."""
        return self.mixture(k, *self.p_y_params(k, y_prev, z))

    # ----- the bound --------------------------------------------------------------------------
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """ELBO terms per image (nats), for a uint8 batch (B, 3, H, W) of any size.

        Returns ``re_x``, ``re_y{k}`` (k = 1..K), ``kl_u`` (Monte-Carlo log q - log p, as p(u) is
        a flow), ``kl_z{k}`` (analytic), ``nelbo`` (their sum), ``log_weight`` (log p(x, w) -
        log q(w | x) of this sample, for IWAE) and ``bpd`` (nelbo in bits per true sub-pixel)."""
        h, w = x.shape[-2:]
        xp = self.pad(x)
        ys = self.pyramid(xp)
        mask = torch.zeros(xp.shape[-2:], dtype=torch.float32, device=x.device)
        mask[:h, :w] = 1.0
        out: dict[str, Tensor] = {}
        qu = self.q_u(ys[0])
        u = qu.rsample(generator)
        kl_u = qu.log_prob(u) - self.prior_u.log_prob(u)
        out["kl_u"] = kl_u
        log_ratio = kl_u
        re_terms = []
        p1 = self.p_y(0, None, u)
        re = -(p1.log_prob_pixels(ys[0]) * (mask if self.levels == 0 else 1.0)).sum(dim=(1, 2))
        re_terms.append(re)
        z_prev = u
        for k in range(1, self.levels + 1):
            qz = self.q_z(k, ys[k])
            z = qz.rsample(generator)
            pz = self.p_z(k, ys[k - 1], z_prev)
            out[f"kl_z{k}"] = qz.kl(pz)
            log_ratio = log_ratio + qz.log_prob(z) - pz.log_prob(z)
            lp = self.p_y(k, ys[k - 1], z).log_prob_pixels(ys[k])
            if k == self.levels:
                lp = lp * mask
            re_terms.append(-lp.sum(dim=(1, 2)))
            z_prev = z
        out["re_x"] = re_terms[-1]
        for k in range(1, self.levels + 1):
            out[f"re_y{k}"] = re_terms[k - 1]
        nelbo = sum(re_terms) + kl_u + sum(out[f"kl_z{k}"] for k in range(1, self.levels + 1))
        out["nelbo"] = nelbo
        out["log_weight"] = -sum(re_terms) - log_ratio
        out["bpd"] = nelbo / (3 * h * w * math.log(2))
        return out

    # ----- operations of §5.2.3 / Fig. 5.4 ---------------------------------------------------
    @torch.no_grad()
    def infer(self, x: Tensor, sample: bool = False) -> tuple[Latents, list[Tensor]]:
        """Posterior means (or samples) of u and every z_k, and the pyramid of the padded x."""
        ys = self.pyramid(self.pad(x))
        qu = self.q_u(ys[0])
        zs = [self.q_z(k, ys[k]) for k in range(1, self.levels + 1)]
        pick = (lambda q: q.rsample()) if sample else (lambda q: q.mu)
        return Latents(pick(qu), [pick(q) for q in zs]), ys

    @torch.no_grad()
    def decode(self, u: Tensor, z: list[Tensor | None] | None = None,
               known_y: dict[int, Tensor] | None = None, point: PointEstimate = "mean",
               generator: torch.Generator | None = None) -> list[Tensor]:
        """Top-down pass: [y_1, ..., y_{K+1}] from ``u``. Each z_k given in ``z`` is used, the
        others come from p(z_k | y_k, z_{k-1}) (mean, or a sample if ``point == "sample"``); each
        y_k in ``known_y`` (k = 1..K) is used as is, the others are the point estimate of their
        mixture. This one pass gives RS1..RS(K+1), CR, super-resolution and generation."""
        z = list(z or [])
        known_y = known_y or {}

        def point_of(dist: DiscretizedLogisticMixture) -> Tensor:
            if point == "sample":
                return dist.sample(generator)
            return dist.mode() if point == "mode" else dist.mean()

        y = known_y.get(1)
        if y is None:
            y = point_of(self.p_y(0, None, u))
        out = [y]
        z_prev = u
        for k in range(1, self.levels + 1):
            zk = z[k - 1] if k - 1 < len(z) else None
            if zk is None:
                pz = self.p_z(k, y, z_prev)
                zk = pz.rsample(generator) if point == "sample" else pz.mu
            nxt = known_y.get(k + 1)
            if nxt is None:
                nxt = point_of(self.p_y(k, y, zk))
            out.append(nxt)
            y, z_prev = nxt, zk
        return out

    def _crop(self, img: Tensor, h: int, w: int) -> Tensor:
        return img[..., :h, :w]

    @torch.no_grad()
    def reconstruct(self, x: Tensor, levels: int, point: PointEstimate = "mean") -> Tensor:
        """RS``levels``: u and z_1..z_{levels-1} inferred, the rest from the priors (Fig. 5.4)."""
        if not 1 <= levels <= self.levels + 1:
            raise ValueError(f"levels must be in 1..{self.levels + 1}")
        lat, _ = self.infer(x)
        return self._crop(self.decode(lat.u, lat.z[:levels - 1], point=point)[-1], *x.shape[-2:])

    @torch.no_grad()
    def conditional_reconstruct(self, x: Tensor, point: PointEstimate = "mean") -> Tensor:
        """CR: every latent inferred and the true y_1..y_K given; x from p(x | y_K, z_K)."""
        lat, ys = self.infer(x)
        known = {k: ys[k - 1] for k in range(1, self.levels + 1)}
        return self._crop(self.decode(lat.u, lat.z, known, point=point)[-1], *x.shape[-2:])

    @torch.no_grad()
    def super_resolve(self, y: Tensor, point: PointEstimate = "mean") -> Tensor:
        """x from its compressed representation y_K alone: the smaller y_k = d(...) are computed,
        u ~ q(u | y_1) (mean), every z_k from its conditional prior."""
        if self.levels == 0:
            raise ValueError("a VAE (levels=0) has no compressed representation")
        ys = [y]
        for _ in range(self.levels - 1):
            ys.insert(0, self.transform(ys[0]))
        u = self.q_u(ys[0]).mu
        known = {k: ys[k - 1] for k in range(1, self.levels + 1)}
        return self.decode(u, None, known, point=point)[-1]

    @torch.no_grad()
    def generate(self, n: int, height: int, width: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """Unconditional samples: u ~ p(u), then ancestral sampling through every level."""
        shape = self.latent_shape(n, *self.padded_size(height, width))
        u = self.prior_u.sample(shape, generator, temperature)
        return self._crop(self.decode(u, point="sample", generator=generator)[-1], height, width)

    @torch.no_grad()
    def interpolate(self, x1: Tensor, x2: Tensor, steps: int = 8, point: PointEstimate = "mean") -> Tensor:
        """Images decoded from u linearly interpolated between the posterior means of two images
        (Fig. 7.9 i); (steps, 3, H, W)."""
        u1, u2 = self.infer(x1)[0].u, self.infer(x2)[0].u
        t = torch.linspace(0, 1, steps, device=u1.device).view(-1, 1, 1, 1)
        u = (1 - t) * u1 + t * u2
        return self._crop(self.decode(u, point=point)[-1], *x1.shape[-2:])


def build_model(config: ModelConfig) -> SSVAE:
    """The model of a configuration (VAE when ``config.levels == 0``)."""
    return SSVAE(config)
