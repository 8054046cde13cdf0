"""Snapping the rate-distortion model's float64 prior parameters to the grids both sides share
(design doc §3.3-3.5): the mean on a fixed grid, the scale to a fixed table, so encoder and
decoder build every symbol's model from the same numbers."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def snap(x: Tensor, step: float) -> Tensor:
    """Round a float64 tensor to multiples of ``step`` (exact in binary for power-of-two steps)."""
    return torch.round(x.double() / step) * step


# --- the rate-distortion model's conditional Gaussian priors (models/rd.py) ------------------
#: log-spaced prior scales from the model's floor to its ceiling (models/rd_layers.py); a
#: latent is coded under the entry nearest its prior's scale in log space
SCALE_TABLE = np.exp(np.linspace(math.log(0.11), math.log(64.0), 64))
RD_MEAN_STEP = 2.0 ** -10


def snap_prior(mu: Tensor, sigma: Tensor) -> tuple[Tensor, np.ndarray]:
    """(mu_hat, table index) from float64 prior parameters: the mean on a 2^-10 grid and the
    scale as the nearest :data:`SCALE_TABLE` entry in log space. Encoder and decoder then build
    every symbol's model and every z_hat = mu_hat + k from these numbers alone (§3.5)."""
    lo, hi = math.log(SCALE_TABLE[0]), math.log(SCALE_TABLE[-1])
    pos = (torch.log(sigma.double()) - lo) / (hi - lo) * (len(SCALE_TABLE) - 1)
    idx = torch.round(pos).clamp(0, len(SCALE_TABLE) - 1).to(torch.int64).numpy()
    return snap(mu, RD_MEAN_STEP), idx
