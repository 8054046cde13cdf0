"""Building blocks of the rate-distortion ssVAE (:mod:`models.rd`): generalized divisive
normalization, the quality (lambda) embedding and the per-channel gains it drives, and the rate of
a uniformly-quantized Gaussian latent."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Smallest prior scale: below it a latent costs ~0 bits and the coder's tables stop (as in
#: CompressAI's scale table, lower bound 0.11).
SCALE_MIN = 0.11
SCALE_MAX = 64.0


class _NonNegative(torch.autograd.Function):
    """|x| whose gradient at x = 0 still lets the value grow: there ``d|x|/dx`` is taken as +1 when
    the loss falls as the value rises (gradient < 0) and as 0 otherwise. Plain ``abs`` has a zero
    gradient at 0, so a weight that starts at exactly 0 (GDN's off-diagonal gamma_ij) never moves.
    The same pass-through as the lower bound of Balle et al. 2018 (CompressAI's ``LowerBound``)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.abs()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return torch.where(x == 0, grad.clamp(max=0.0), grad * torch.sign(x))


def non_negative(x: Tensor) -> Tensor:
    """|x|, with a gradient at 0 towards positive values (:class:`_NonNegative`)."""
    return _NonNegative.apply(x)


class GDN(nn.Module):
    """Simplified generalized divisive normalization (Johnston et al. 2019, "Computationally
    efficient neural image compression", after Balle et al. 2016):
    ``y_i = x_i / (beta_i + sum_j gamma_ij |x_j|)``, or ``x_i * (...)`` for the inverse (IGDN).

    gamma starts at 0.1 I, as in Balle's GDN. Its off-diagonal entries learn through
    :func:`non_negative`; until session 12 they sat under plain ``abs``, whose zero gradient at 0
    kept every trained model's GDNs diagonal (a per-channel nonlinearity)."""

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels).view(channels, channels, 1, 1))

    def effective(self) -> tuple[Tensor, Tensor]:
        """(beta (C,), gamma (C, C, 1, 1)) as the layer applies them, both >= 0."""
        return non_negative(self.beta) + 1e-6, non_negative(self.gamma)

    def forward(self, x: Tensor) -> Tensor:
        beta, gamma = self.effective()
        norm = F.conv2d(x.abs(), gamma, beta)
        return x * norm if self.inverse else x / norm


class QualityEmbedding(nn.Module):
    """Quality ``q`` (a continuous number, lambda = lambda(q)) -> a feature vector: sinusoids of
    ``q`` through a two-layer MLP, as QARV embeds ln lambda (Duan et al. 2023, §3.3)."""

    def __init__(self, dim: int = 64, freqs: int = 8, q_range: float = 8.0) -> None:
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.arange(1, freqs + 1, dtype=torch.float32) / q_range,
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * freqs + 1, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU())
        self.q_range = q_range

    def forward(self, q: Tensor) -> Tensor:
        a = q.float().view(-1, 1) * self.freqs.to(q.device)
        return self.mlp(torch.cat([torch.sin(a), torch.cos(a), q.float().view(-1, 1) / self.q_range], dim=1))


class Gain(nn.Module):
    """Per-channel gain ``exp(W e + b)`` from the quality embedding ``e``: continuous gain units
    (Cui et al. 2021, "Asymmetric gained deep image compression"), starting at 1."""

    def __init__(self, emb_dim: int, channels: int) -> None:
        super().__init__()
        self.lin = nn.Linear(emb_dim, channels)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return x * torch.exp(self.lin(emb)).view(emb.shape[0], -1, 1, 1)


class ResBlock(nn.Module):
    """``h + conv(GELU(conv(GELU(h))))`` at constant width, the residual unit of the top-down
    path in VDVAE / QRes-VAE (Child 2021; Duan et al. 2023). The second conv starts at zero, so a
    new block is the identity: a trained model can grow one without changing what it computes."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.c1 = conv(channels, channels)
        self.c2 = conv(channels, channels)
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.c2(F.gelu(self.c1(F.gelu(h))))


def conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2)


def deconv(c_in: int, c_out: int, kernel: int = 5) -> nn.ConvTranspose2d:
    """Exact 2x upsampling transposed convolution."""
    return nn.ConvTranspose2d(c_in, c_out, kernel, 2, kernel // 2, output_padding=1)


_SUBPIXEL_TAPS = torch.tensor([[4, 2, 0], [5, 3, 1]])  # kernel tap of output phase a and input offset d - 1


def subpixel_weights(layer: nn.ConvTranspose2d) -> tuple[Tensor, Tensor | None]:
    """The 3x3 convolution (weight (4 C_out, C_in, 3, 3), bias) that, followed by a 2x pixel
    shuffle, computes a :func:`deconv` layer (5x5, stride 2, padding 2, output padding 1): the
    sub-pixel convolution (Shi et al. 2016). Output pixel (2i + a, 2j + b) reads inputs
    (i + dy, j + dx), dy, dx in {-1, 0, 1}, through tap (a + 2 - 2 dy, b + 2 - 2 dx) (taps outside
    0..4 are zero)."""
    w = F.pad(layer.weight, (0, 1, 0, 1))  # (C_in, C_out, 6, 6): tap 5 is the zero padding
    t = _SUBPIXEL_TAPS.to(w.device)
    sub = w[:, :, t[:, None, :, None], t[None, :, None, :]]  # (C_in, C_out, a, b, dy, dx)
    c_in, c_out = w.shape[:2]
    weight = sub.permute(1, 2, 3, 0, 4, 5).reshape(4 * c_out, c_in, 3, 3)
    return weight, None if layer.bias is None else layer.bias.repeat_interleave(4)


def deconv_subpixel(layer: nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """``layer(x)`` for a :func:`deconv` layer as a sub-pixel convolution
    (:func:`subpixel_weights`): the same numbers as the transposed convolution up to float
    rounding, and faster on CPU for the wide full-resolution layers of a render."""
    weight, bias = subpixel_weights(layer)
    return F.pixel_shuffle(F.conv2d(x, weight, bias, padding=1), 2)


def scale_from_raw(raw: Tensor, floor: Tensor | float = SCALE_MIN) -> Tensor:
    """Prior scale from a network output: ``softplus(raw) + floor`` (softplus keeps the gradient
    smooth near the floor, Efficient-VDVAE's "gradient smoothing"), at most SCALE_MAX."""
    return (F.softplus(raw) + floor).clamp(max=SCALE_MAX)


def gaussian_bits(y: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """Bits of ``y`` under N(mu, sigma^2) convolved with U(-1/2, 1/2), elementwise: the rate of a
    uniformly-quantized latent (Balle et al. 2018, eq. 7). Computed on the side of the mean where
    the normal CDF does not round to 1."""
    v = (y - mu).abs()
    s = sigma.clamp_min(1e-6)
    upper = torch.special.ndtr((0.5 - v) / s)
    lower = torch.special.ndtr((-0.5 - v) / s)
    return -torch.log2((upper - lower).clamp_min(1e-9))
