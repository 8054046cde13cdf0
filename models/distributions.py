"""Probability distributions of the ssVAE: the only home of the discretized logistic mixture, the
diagonal Gaussian (with its analytic KL) and the standard-normal / mixture-of-Gaussians priors.

Conventions: images are uint8 tensors (B, C, H, W); inside the mixture they are scaled to [0, 1]
with bins of width 1/255 and open edge bins (thesis §3.4; Salimans et al. 2017, PixelCNN++,
arXiv:1701.05517). All log-likelihoods are in nats and summed per image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_2PI = math.log(2 * math.pi)
HALF_BIN = 0.5 / 255.0


def n_coeffs(channels: int) -> int:
    """Number of linear channel coefficients: c_gr for G|R, c_br and c_bg for B|R,G."""
    return channels * (channels - 1) // 2


def dmol_param_channels(channels: int, n_mix: int) -> int:
    """Network output channels for a mixture over ``channels``-channel pixels: logits, means,
    log-scales and channel coefficients of each component (10 per component for RGB)."""
    return n_mix * (1 + 2 * channels + n_coeffs(channels))


def _log1mexp(d: Tensor) -> Tensor:
    """log(1 - exp(-d)) for d > 0, accurate for all d (Maechler 2012)."""
    return torch.where(d > math.log(2.0), torch.log1p(-torch.exp(-d)), torch.log(-torch.expm1(-d)))


def log_discretized_logistic(x: Tensor, mean: Tensor, log_scale: Tensor, value: Tensor) -> Tensor:
    """log P(v) for a logistic(mean, exp(log_scale)) discretized to the bin of ``x = v/255``
    (thesis §3.4). ``value`` holds the integers v; bins 0 and 255 are open to -inf / +inf.

    log(sigmoid(a) - sigmoid(b)) = a - softplus(a) - softplus(b) + log(1 - exp(b - a)) is finite
    and accurate in every tail; all three branches stay finite so gradients never see NaN."""
    inv_s = torch.exp(-log_scale)
    a = (x + HALF_BIN - mean) * inv_s
    b = (x - HALF_BIN - mean) * inv_s
    middle = a - F.softplus(a) - F.softplus(b) + _log1mexp(a - b)
    low = -F.softplus(-a)     # log sigmoid(a): the bin (-inf, 0.5/255]
    high = -F.softplus(b)     # log(1 - sigmoid(b)): the bin [254.5/255, +inf)
    return torch.where(value == 0, low, torch.where(value == 255, high, middle))


class DiscretizedLogisticMixture:
    """Mixture of discretized logistics with PixelCNN++ linear dependence between channels.

    ``params`` (B, n_mix * (1 + 2C + C(C-1)/2), H, W) is split into mixture logits, means,
    log-scales (shifted by ``log_scale_offset``, then floored at ``min_log_scale``) and
    tanh-squashed coefficients. ``base`` (B, C, H, W,
    in [0, 1]) is added to every component's means: decoders predict a residual on the upsampled
    lower-resolution image.

    For channel c the component mean is ``mu_c + sum_{j<c} coeff_{cj} * x_j`` with x_j the actual
    (known) value of the earlier channel of the same pixel.
    """

    def __init__(self, params: Tensor, channels: int, n_mix: int, base: Tensor | None = None,
                 min_log_scale: float = -7.0, log_scale_offset: float = 0.0) -> None:
        b, p, h, w = params.shape
        if p != dmol_param_channels(channels, n_mix):
            raise ValueError(f"expected {dmol_param_channels(channels, n_mix)} parameter channels, got {p}")
        self.channels, self.n_mix = channels, n_mix
        m, c = n_mix, channels
        self.logits = params[:, :m]
        self.means = params[:, m:m + m * c].reshape(b, m, c, h, w)
        log_scales = params[:, m + m * c:m + 2 * m * c].reshape(b, m, c, h, w) + log_scale_offset
        self.log_scales = log_scales.clamp_min(min_log_scale)
        self.coeffs = torch.tanh(params[:, m + 2 * m * c:].reshape(b, m, n_coeffs(c), h, w))
        if base is not None:
            self.means = self.means + base.unsqueeze(1).to(self.means.dtype)

    def rows(self, start: int, stop: int) -> "DiscretizedLogisticMixture":
        """The same mixture restricted to image rows [start, stop) (a view, no copy)."""
        out = DiscretizedLogisticMixture.__new__(DiscretizedLogisticMixture)
        out.channels, out.n_mix = self.channels, self.n_mix
        out.logits = self.logits[..., start:stop, :]
        out.means = self.means[..., start:stop, :]
        out.log_scales = self.log_scales[..., start:stop, :]
        out.coeffs = self.coeffs[..., start:stop, :]
        return out

    # ----- likelihood -------------------------------------------------------------------------
    def _conditioned_means(self, xs: Tensor, means: Tensor) -> Tensor:
        """Component means of every channel given the actual values ``xs`` (B, C' >= C-1, H, W,
        in [0, 1]) of the earlier channels."""
        coeffs = self.coeffs.to(means.dtype)
        out = [means[:, :, 0]]
        k = 0
        for c in range(1, self.channels):
            m = means[:, :, c]
            for j in range(c):
                m = m + coeffs[:, :, k] * xs[:, j].unsqueeze(1)
                k += 1
            out.append(m)
        return torch.stack(out, dim=2)

    def log_prob_pixels(self, x: Tensor) -> Tensor:
        """log p(x) per pixel, (B, H, W), for a uint8 image ``x`` (B, C, H, W)."""
        value = x.long().unsqueeze(1)
        xs = x.to(self.means.dtype) / 255.0
        lp = log_discretized_logistic(xs.unsqueeze(1), self._conditioned_means(xs, self.means), self.log_scales, value)
        return torch.logsumexp(lp.sum(dim=2) + F.log_softmax(self.logits, dim=1), dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) in nats per image, (B,)."""
        return self.log_prob_pixels(x).sum(dim=(1, 2))

    # ----- point estimates and sampling -------------------------------------------------------
    def _to_uint8(self, v: Tensor) -> Tensor:
        return torch.round(v.clamp(0.0, 1.0) * 255.0).to(torch.uint8)

    def mean_continuous(self) -> Tensor:
        """Mean image in [0, 1] of the continuous mixture (channel coefficients applied to each
        component's own means, component means clipped to [0, 1]); differentiable."""
        weights = F.softmax(self.logits, dim=1).unsqueeze(2)
        comp = self._component_chain(self.means)
        return (weights * comp.clamp(0.0, 1.0)).sum(dim=1)

    def mean(self) -> Tensor:
        """:meth:`mean_continuous` rounded to 8 bit: the MSE-optimal point estimate up to the
        discretisation of the edge bins."""
        return self._to_uint8(self.mean_continuous())

    def _component_chain(self, values: Tensor) -> Tensor:
        """Means of each component when earlier channels take that component's own values."""
        out = [values[:, :, 0]]
        k = 0
        for c in range(1, self.channels):
            v = values[:, :, c]
            for j in range(c):
                v = v + self.coeffs[:, :, k] * out[j]
                k += 1
            out.append(v)
        return torch.stack(out, dim=2)

    def mode(self) -> Tensor:
        """Approximate mode: the most probable component's chained means, rounded."""
        idx = self.logits.argmax(dim=1, keepdim=True)
        comp = self._component_chain(self.means)
        return self._pick(comp, idx)

    def _pick(self, comp: Tensor, idx: Tensor) -> Tensor:
        b, m, c, h, w = comp.shape
        gathered = comp.gather(1, idx.unsqueeze(2).expand(b, 1, c, h, w)).squeeze(1)
        return self._to_uint8(gathered)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral sample: component by Gumbel-max, then each channel given the earlier ones."""
        b, m, c, h, w = self.means.shape
        u = torch.rand(self.logits.shape, generator=generator, device=self.logits.device)
        idx = (self.logits - torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-10)))).argmax(dim=1, keepdim=True)
        sel = lambda t: t.gather(1, idx.unsqueeze(2).expand(b, 1, t.shape[2], h, w)).squeeze(1)  # noqa: E731
        means, log_scales, coeffs = sel(self.means), sel(self.log_scales), sel(self.coeffs)
        noise = torch.rand(means.shape, generator=generator, device=means.device).clamp(1e-5, 1 - 1e-5)
        logistic = torch.log(noise) - torch.log1p(-noise)
        out: list[Tensor] = []
        k = 0
        for ch in range(c):
            mu = means[:, ch]
            for j in range(ch):
                mu = mu + coeffs[:, k] * out[j]
                k += 1
            val = (mu + torch.exp(log_scales[:, ch]) * logistic[:, ch]).clamp(0.0, 1.0)
            out.append(torch.round(val * 255.0) / 255.0)
        return self._to_uint8(torch.stack(out, dim=1))

    # ----- exact tables for entropy coding ----------------------------------------------------
    def probability_table(self, channel: int, known: Tensor | None = None,
                          dtype: torch.dtype = torch.float64) -> Tensor:
        """P(x_c = v | x_0..x_{c-1} = known) for v in 0..255, shape (B, H, W, 256).

        Component weights are computed in float64; the 256-entry CDF differences in ``dtype``
        (float32 is 7x faster and plenty for an entropy coder that quantizes to 24 bits).

        The joint of an RGB pixel is not a product of per-channel mixtures: the component weights
        are re-weighted by the likelihood of the already-known channels (design doc §3.2), so
        log P(R) + log P(G|R) + log P(B|R,G) equals :meth:`log_prob_pixels`. Rows sum to 1."""
        if channel > 0 and known is None:
            raise ValueError("channels after the first need the known earlier channels")
        dt = torch.float64
        logw = F.log_softmax(self.logits.to(dt), dim=1)                        # (B, M, H, W)
        means = self.means.to(dt)
        log_scales = self.log_scales.to(dt)
        if channel > 0:
            assert known is not None
            xs = known.to(dt) / 255.0
            cond = self._conditioned_means(self._pad_known(xs), means)
            for j in range(channel):
                lp = log_discretized_logistic(xs[:, j].unsqueeze(1), cond[:, :, j], log_scales[:, :, j],
                                              known[:, j].long().unsqueeze(1))
                logw = logw + lp
            logw = logw - torch.logsumexp(logw, dim=1, keepdim=True)
            mean_c = cond[:, :, channel]
        else:
            mean_c = means[:, :, 0]
        edges = (torch.arange(255, dtype=dtype, device=means.device) + 0.5) / 255.0
        inv_s = torch.exp(-log_scales[:, :, channel]).to(dtype)
        table = None
        for m in range(self.n_mix):  # elementwise accumulation: no reduction whose order could vary
            cdf = torch.sigmoid((edges - mean_c[:, m].to(dtype).unsqueeze(-1)) * inv_s[:, m].unsqueeze(-1))
            zeros = torch.zeros_like(cdf[..., :1])
            cdf = torch.cat([zeros, cdf, zeros + 1.0], dim=-1)
            probs = (cdf[..., 1:] - cdf[..., :-1]).clamp_min(0.0) * torch.exp(logw[:, m]).to(dtype).unsqueeze(-1)
            table = probs if table is None else table + probs
        assert table is not None
        return table

    def _pad_known(self, xs: Tensor) -> Tensor:
        """Pad the known channels with zeros up to C (the padded ones are never used)."""
        missing = self.channels - xs.shape[1]
        return xs if missing <= 0 else torch.cat([xs, xs.new_zeros(xs.shape[0], missing, *xs.shape[2:])], 1)


class DiagonalGaussian:
    """N(mu, diag(exp(logvar))) over latent maps (B, C, h, w); log-variances clamped (§5.3)."""

    def __init__(self, mu: Tensor, logvar: Tensor, clamp: float = 7.0) -> None:
        self.mu = mu
        self.logvar = logvar.clamp(-clamp, clamp)

    @classmethod
    def from_params(cls, params: Tensor, clamp: float = 7.0) -> "DiagonalGaussian":
        mu, logvar = params.chunk(2, dim=1)
        return cls(mu, logvar, clamp)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + self.std * eps

    def log_prob(self, z: Tensor) -> Tensor:
        """Sum of per-dimension Gaussian log-densities, (B,)."""
        lp = -0.5 * (LOG_2PI + self.logvar + (z - self.mu) ** 2 * torch.exp(-self.logvar))
        return lp.flatten(1).sum(dim=1)

    def kl(self, other: "DiagonalGaussian") -> Tensor:
        """Analytic KL(self || other) between diagonal Gaussians, summed per image, (B,)."""
        kl = 0.5 * (other.logvar - self.logvar
                    + (torch.exp(self.logvar) + (self.mu - other.mu) ** 2) * torch.exp(-other.logvar) - 1.0)
        return kl.flatten(1).sum(dim=1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed per image, (B,)."""
    return (-0.5 * (LOG_2PI + z ** 2)).flatten(1).sum(dim=1)


class StandardNormalPrior(nn.Module):
    """p(u) = N(0, I) (Table 7.1 "VAE")."""

    def log_prob(self, u: Tensor) -> Tensor:
        return standard_normal_log_prob(u)

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        return temperature * torch.randn(shape, generator=generator, device=self._device())

    def mode(self, shape: tuple[int, ...]) -> Tensor:
        return torch.zeros(shape, device=self._device())

    def _device(self) -> torch.device:
        return next(self.buffers(), torch.zeros(())).device


class MixtureOfGaussiansPrior(nn.Module):
    """p(u) = sum_k pi_k N(mu_k, diag sigma_k^2) over the channel vector at every latent position
    (Table 7.1 "VAE + MoG"); positions are independent, so the prior is fully convolutional."""

    def __init__(self, channels: int, components: int) -> None:
        super().__init__()
        self.means = nn.Parameter(torch.randn(components, channels) * 0.5)
        self.logvars = nn.Parameter(torch.zeros(components, channels))
        self.logits = nn.Parameter(torch.zeros(components))

    def log_prob(self, u: Tensor) -> Tensor:
        x = u.permute(0, 2, 3, 1).unsqueeze(-2)                                  # (B, h, w, 1, C)
        lp = -0.5 * (LOG_2PI + self.logvars + (x - self.means) ** 2 * torch.exp(-self.logvars))
        lp = lp.sum(-1) + F.log_softmax(self.logits, dim=0)                       # (B, h, w, K)
        return torch.logsumexp(lp, dim=-1).flatten(1).sum(dim=1)

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        b, c, h, w = shape
        probs = F.softmax(self.logits, dim=0).expand(b * h * w, -1)
        k = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        eps = torch.randn(b * h * w, c, generator=generator, device=self.means.device)
        z = self.means[k] + temperature * torch.exp(0.5 * self.logvars[k]) * eps
        return z.view(b, h, w, c).permute(0, 3, 1, 2).contiguous()

    def mode(self, shape: tuple[int, ...]) -> Tensor:
        b, c, h, w = shape
        k = int(self.logits.argmax())
        return self.means[k].view(1, c, 1, 1).expand(b, c, h, w).contiguous()
