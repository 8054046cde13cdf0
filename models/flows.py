"""RealNVP prior over latent maps (Dinh et al. 2017, arXiv:1605.08803; thesis §4.4 and §5.1).

``forward`` maps the base variable v ~ N(0, I) to the latent u, ``inverse`` maps u back to v, and
``log_prob(u) = log N(f^-1(u)) + log|det d f^-1(u) / du|`` is exact. Couplings use spatial
checkerboard and channel masks; a squeeze trades space for channels in the middle.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .distributions import standard_normal_log_prob


def squeeze2x2(x: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, 4C, h/2, w/2): each 2x2 block becomes 4 channels."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze2x2(x: Tensor) -> Tensor:
    """Inverse of :func:`squeeze2x2`."""
    b, c4, h, w = x.shape
    c = c4 // 4
    x = x.view(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c, 2 * h, 2 * w)


def checkerboard(h: int, w: int, parity: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(1, 1, h, w) mask, 1 where (i + j + parity) is even: the half that conditions."""
    i = torch.arange(h, device=device).view(-1, 1)
    j = torch.arange(w, device=device).view(1, -1)
    return (((i + j + parity) % 2) == 0).to(dtype).view(1, 1, h, w)


class AffineCoupling(nn.Module):
    """Affine coupling layer: the masked half passes unchanged and conditions a scale and shift of
    the other half, ``y_b = x_b * exp(s(x_a)) + t(x_a)`` (thesis §4.4). ``s`` is tanh-bounded and
    the last layer starts at zero, so a new flow is the identity."""

    def __init__(self, channels: int, hidden: int, mask: str, parity: int) -> None:
        super().__init__()
        if mask not in ("checker", "channel"):
            raise ValueError(mask)
        self.mask, self.parity = mask, parity
        c_in = channels if mask == "checker" else channels // 2
        c_out = 2 * (channels if mask == "checker" else channels - channels // 2)
        self.net = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1), nn.ELU(),
            nn.Conv2d(hidden, hidden, 1), nn.ELU(),
            nn.Conv2d(hidden, c_out, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.scale = nn.Parameter(torch.ones(1))

    def _st(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.net(cond).chunk(2, dim=1)
        return self.scale * torch.tanh(s), t

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        half = x.shape[1] // 2
        a, b = x[:, :half], x[:, half:]
        return (a, b) if self.parity == 0 else (b, a)

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([a, b] if self.parity == 0 else [b, a], dim=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Base side -> latent side; returns (y, log|det dy/dx|) per image."""
        if self.mask == "checker":
            m = checkerboard(x.shape[2], x.shape[3], self.parity, x.device, x.dtype)
            s, t = self._st(x * m)
            s, t = s * (1 - m), t * (1 - m)
            return x * torch.exp(s) + t, s.flatten(1).sum(1)
        a, b = self._split(x)
        s, t = self._st(a)
        return self._join(a, b * torch.exp(s) + t), s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Latent side -> base side; returns (x, log|det dx/dy|) per image."""
        if self.mask == "checker":
            m = checkerboard(y.shape[2], y.shape[3], self.parity, y.device, y.dtype)
            s, t = self._st(y * m)
            s, t = s * (1 - m), t * (1 - m)
            return (y - t) * torch.exp(-s), -s.flatten(1).sum(1)
        a, b = self._split(y)
        s, t = self._st(a)
        return self._join(a, (b - t) * torch.exp(-s)), -s.flatten(1).sum(1)


class _Squeeze(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return squeeze2x2(x), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return unsqueeze2x2(y), y.new_zeros(y.shape[0])


class _Unsqueeze(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return unsqueeze2x2(x), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return squeeze2x2(y), y.new_zeros(y.shape[0])


class RealNVPPrior(nn.Module):
    """p(u) as a RealNVP flow over a standard-normal base v (thesis eq. in §5.1):
    checkerboard couplings, squeeze, channel couplings, un-squeeze, checkerboard couplings.
    Latent maps need even height and width."""

    def __init__(self, channels: int, hidden: int, checker_in: int = 3, channel: int = 3,
                 checker_out: int = 2) -> None:
        super().__init__()
        steps: list[nn.Module] = [AffineCoupling(channels, hidden, "checker", i % 2) for i in range(checker_in)]
        if channel:
            steps.append(_Squeeze())
            steps += [AffineCoupling(4 * channels, hidden, "channel", i % 2) for i in range(channel)]
            steps.append(_Unsqueeze())
        steps += [AffineCoupling(channels, hidden, "checker", (checker_in + i) % 2) for i in range(checker_out)]
        self.steps = nn.ModuleList(steps)

    def forward(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """u = f(v) and log|det df/dv| per image."""
        logdet = v.new_zeros(v.shape[0])
        for step in self.steps:
            v, ld = step(v)
            logdet = logdet + ld
        return v, logdet

    def inverse(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """v = f^-1(u) and log|det df^-1/du| per image."""
        logdet = u.new_zeros(u.shape[0])
        for step in reversed(self.steps):
            u, ld = step.inverse(u)
            logdet = logdet + ld
        return u, logdet

    def log_prob(self, u: Tensor) -> Tensor:
        """Exact log p(u) per image (change of variables)."""
        v, logdet = self.inverse(u)
        return standard_normal_log_prob(v) + logdet

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        v = temperature * torch.randn(shape, generator=generator, device=self._device())
        return self.forward(v)[0]

    def mode(self, shape: tuple[int, ...]) -> Tensor:
        """f(0): the image of the base mode (not in general the mode of p(u))."""
        return self.forward(torch.zeros(shape, device=self._device()))[0]

    def _device(self) -> torch.device:
        return next(self.parameters()).device
