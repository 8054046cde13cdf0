"""Discretized logistic mixture, diagonal Gaussian and priors (models/distributions.py)."""
from __future__ import annotations

import math

import pytest
import torch

from ssvcodec.models.distributions import (DiagonalGaussian, DiscretizedLogisticMixture, MixtureOfGaussiansPrior,
                                  dmol_param_channels, log_discretized_logistic)


def random_mixture(channels: int, n_mix: int = 4, h: int = 3, w: int = 5, seed: int = 0) -> DiscretizedLogisticMixture:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(2, dmol_param_channels(channels, n_mix), h, w, generator=g, dtype=torch.float64)
    m = n_mix
    p[:, m:m + m * channels] = torch.rand(2, m * channels, h, w, generator=g, dtype=torch.float64)  # means in [0,1]
    p[:, m + m * channels:m + 2 * m * channels] -= 3.5                                               # scales ~ 8/255
    return DiscretizedLogisticMixture(p, channels, n_mix)


@pytest.mark.parametrize("channels", [1, 3])
def test_probability_tables_sum_to_one_and_match_log_likelihood(channels: int) -> None:
    d = random_mixture(channels)
    g = torch.Generator().manual_seed(1)
    x = d.sample(g)        # typical values: probabilities far above float64 resolution
    x[0, :, 0, 0] = 0      # the open edge bins
    x[1, :, 0, 1] = 255
    total = torch.zeros(2, 3, 5, dtype=torch.float64)
    for c in range(channels):
        table = d.probability_table(c, x[:, :c] if c else None)
        assert table.shape == (2, 3, 5, 256)
        assert torch.allclose(table.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64), atol=1e-12)
        total += torch.log(table.gather(-1, x[:, c].long().unsqueeze(-1)).squeeze(-1))
    assert torch.allclose(total, d.log_prob_pixels(x), atol=1e-6)


def test_single_channel_mixture_normalises_over_all_256_values() -> None:
    g = torch.Generator().manual_seed(3)
    params = torch.randn(1, dmol_param_channels(1, 4), 1, 1, generator=g, dtype=torch.float64).expand(256, -1, -1, -1)
    d = DiscretizedLogisticMixture(params, 1, 4)
    values = torch.arange(256, dtype=torch.uint8).view(256, 1, 1, 1)
    assert abs(float(torch.logsumexp(d.log_prob_pixels(values).flatten(), 0))) < 1e-9


def test_log_discretized_logistic_is_finite_far_in_the_tails() -> None:
    v = torch.tensor([0, 1, 128, 254, 255])
    x = v.double() / 255
    for mean in (-50.0, 0.5, 50.0):
        lp = log_discretized_logistic(x, torch.full_like(x, mean), torch.full_like(x, -7.0), v)
        assert torch.isfinite(lp).all()
    # a narrow logistic centred on the bin gives almost all mass to it
    lp = log_discretized_logistic(x, x, torch.full_like(x, -9.0), v)
    assert torch.allclose(lp, torch.zeros_like(lp), atol=1e-4)


def test_mean_mode_and_sample_are_images_near_the_means() -> None:
    d = random_mixture(3)
    for img in (d.mean(), d.mode(), d.sample(torch.Generator().manual_seed(0))):
        assert img.dtype == torch.uint8 and img.shape == (2, 3, 3, 5)
    narrow = DiscretizedLogisticMixture(torch.cat([torch.zeros(1, 1, 2, 2), torch.full((1, 3, 2, 2), 0.4),
                                                   torch.full((1, 3, 2, 2), -9.0), torch.zeros(1, 3, 2, 2)], 1), 3, 1)
    assert (narrow.mean() == 102).all() and (narrow.mode() == 102).all()
    assert (narrow.sample().int() - 102).abs().max() <= 1


def test_gaussian_kl_matches_monte_carlo() -> None:
    g = torch.Generator().manual_seed(0)
    q = DiagonalGaussian(torch.randn(1, 2, 2, 2, generator=g, dtype=torch.float64),
                         torch.randn(1, 2, 2, 2, generator=g, dtype=torch.float64) * 0.5)
    p = DiagonalGaussian(torch.randn(1, 2, 2, 2, generator=g, dtype=torch.float64),
                         torch.randn(1, 2, 2, 2, generator=g, dtype=torch.float64) * 0.5)
    z = q.mu + q.std * torch.randn(200000, 2, 2, 2, generator=g, dtype=torch.float64)
    qb = DiagonalGaussian(q.mu.expand_as(z), q.logvar.expand_as(z))
    pb = DiagonalGaussian(p.mu.expand_as(z), p.logvar.expand_as(z))
    mc = (qb.log_prob(z) - pb.log_prob(z)).mean()
    assert abs(float(mc) - float(q.kl(p))) < 0.05 * max(1.0, float(q.kl(p)))
    assert float(q.kl(q)) == pytest.approx(0.0, abs=1e-12)


def test_mog_prior_log_prob_matches_direct_formula() -> None:
    torch.manual_seed(0)
    prior = MixtureOfGaussiansPrior(channels=2, components=3).double()
    u = torch.randn(1, 2, 1, 1, dtype=torch.float64)
    with torch.no_grad():
        w = torch.softmax(prior.logits, 0)
        dens = sum(w[k] * torch.exp(-0.5 * ((u.flatten() - prior.means[k]) ** 2 / torch.exp(prior.logvars[k])).sum())
                   / torch.sqrt((2 * math.pi) ** 2 * torch.exp(prior.logvars[k]).prod()) for k in range(3))
        assert float(prior.log_prob(u)) == pytest.approx(math.log(float(dens)), abs=1e-10)
    assert prior.sample((2, 2, 3, 3)).shape == (2, 2, 3, 3)
