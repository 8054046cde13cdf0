"""Encoder-side latent refinement (codec/refine.py)."""
from __future__ import annotations

import torch

from codec.refine import refine_latent
from models.distributions import DiscretizedLogisticMixture, dmol_param_channels


def _render(z: torch.Tensor) -> DiscretizedLogisticMixture:
    """A one-component mixture whose means are sigmoid(z): a decoder we can reason about."""
    b, c, h, w = z.shape
    params = torch.cat([torch.zeros(b, 1, h, w), torch.sigmoid(z), torch.full((b, c, h, w), 0.0),
                        torch.zeros(b, 3, h, w)], dim=1)
    assert params.shape[1] == dmol_param_channels(3, 1)
    return DiscretizedLogisticMixture(params, 3, 1)


def test_refinement_moves_the_render_towards_the_target() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 256, (1, 3, 4, 4), generator=g, dtype=torch.uint8)
    init = torch.zeros(1, 3, 4, 4)
    err = lambda z: float(((_render(z).mean_continuous() * 255 - target.float()) ** 2).mean())  # noqa: E731
    out = refine_latent(init, torch.zeros_like(init), 1.0, target, _render, steps=50, rate_weight=0.0, threads=1, lr=0.2)
    assert err(out) < 0.5 * err(init)
    # a heavy rate weight keeps the latent at the prior mean
    held = refine_latent(init, torch.zeros_like(init), 1.0, target, _render, steps=50, rate_weight=1e9, threads=1)
    assert held.abs().max() < 1e-3
    assert torch.equal(refine_latent(init, init, 1.0, target, _render, steps=0, rate_weight=1.0, threads=1), init)
