"""Snapping the rate-distortion model's priors (codec/quantize.py)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ssvcodec.codec.quantize import SCALE_TABLE, snap, snap_prior


def test_snapping_is_idempotent_and_on_the_grid() -> None:
    x = torch.randn(1000, dtype=torch.float64)
    s = snap(x, 2 ** -10)
    assert torch.equal(snap(s, 2 ** -10), s)
    assert torch.equal(s * 1024, torch.round(s * 1024))


def test_prior_scales_go_to_the_nearest_table_entry_in_log_space() -> None:
    sigma = torch.tensor([0.01, 0.11, 1.0, 64.0, 1e3], dtype=torch.float64)
    mu, idx = snap_prior(torch.zeros_like(sigma), sigma)
    assert idx.tolist()[0] == 0 and idx.tolist()[-1] == len(SCALE_TABLE) - 1
    near = int(np.argmin(np.abs(np.log(SCALE_TABLE) - math.log(1.0))))
    assert idx[2] == near and torch.equal(mu, torch.zeros_like(sigma))
