"""Latent quantization (codec/quantize.py) and its cost in the entropy coder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssvcodec.codec.progressive import decode_latent, encode_latent
from ssvcodec.codec.quantize import (STD_TABLE, choose_std_indices, dequantize, quantize, quantize_posterior, snap,
                            snap_gaussian, step_for_quality)


def test_quality_sets_the_step_and_bad_values_are_refused() -> None:
    assert step_for_quality(4) == 0.25
    with pytest.raises(ValueError):
        step_for_quality(0)


def test_snapping_is_idempotent_and_on_the_grid() -> None:
    x = torch.randn(1000, dtype=torch.float64)
    s = snap(x, 2 ** -10)
    assert torch.equal(snap(s, 2 ** -10), s)
    assert torch.equal(s * 1024, torch.round(s * 1024))
    mu, sd = snap_gaussian(torch.randn(1, 8, 3, 3), clamp=7.0)
    assert mu.dtype == torch.float64 and (sd > 0).all()


def test_reconstruction_error_is_at_most_half_a_step() -> None:
    g = torch.Generator().manual_seed(0)
    mean, std = torch.randn(1, 4, 5, 5, generator=g).double(), torch.rand(1, 4, 5, 5, generator=g).double() + 0.1
    value = torch.randn(1, 4, 5, 5, generator=g).double()
    for q in (0.5, 4.0, 32.0):
        step = step_for_quality(q)
        rec = dequantize(quantize(value, mean, std, step), mean, std, step)
        assert ((rec - value).abs() <= 0.5 * step * std + 1e-12).all()


def test_unused_dimensions_cost_almost_nothing() -> None:
    """A latent whose posterior equals its prior in half the channels and is informative in the
    other half: the unused channels are sent as 0 and cost one table-index byte each."""
    g = torch.Generator().manual_seed(1)
    shape = (1, 16, 32, 48)
    mean, std = torch.zeros(shape, dtype=torch.float64), torch.ones(shape, dtype=torch.float64)
    mu_q = torch.randn(shape, generator=g, dtype=torch.float64) * 0.3     # posterior means spread like the prior
    std_q = torch.ones(shape, dtype=torch.float64)
    std_q[:, :8] = 0.05                                                    # channels 0-7 informative
    sym = quantize_posterior(mu_q, std_q, mean, std, step_for_quality(4))
    assert (sym[:, 8:] == 0).all() and sym[:, :8].any()
    payload, bits = encode_latent(sym)
    idx = choose_std_indices(sym)
    assert (idx[8:] == 0).all() and (idx[:8] > 0).all()
    used_only, _ = encode_latent(sym[:, :8])
    assert len(payload) - len(used_only) <= 8 + 4   # 8 index bytes (+ coder word alignment)
    assert np.array_equal(decode_latent(payload, shape, "test"), sym)
    assert 0 < bits / 8 <= len(payload) * 1.02


def test_channel_scale_is_the_cheapest_in_the_table() -> None:
    rng = np.random.default_rng(0)
    sym = np.round(rng.normal(0, 3.0, (1, 2, 40, 40))).astype(np.int32)
    idx = choose_std_indices(sym)
    assert 2.0 < STD_TABLE[idx[0]] < 4.5
