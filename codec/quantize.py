"""Quantization of the latents after training, with one quality knob, and the snapping of
network outputs to fixed grids (design doc §3.3-3.5).

* ``u`` is coded in the flow's base space: ``v = f^-1(mu_q(u))`` under N(0, I); symbols
  ``k = round(v / step)``, reconstruction ``v_hat = k * step``, ``u_hat = f(v_hat)``.
* ``z_k`` is coded relative to its conditional prior: with the prior's parameters snapped to a
  grid, ``k = round((mu_q - mu_hat) / (step * sigma_hat))`` and ``z_hat = mu_hat + k * step *
  sigma_hat``; encoder and decoder build z_hat from the same snapped numbers.
* ``step = 1 / quality`` in units of the prior's standard deviation.
* The symbols of each latent channel are coded under N(0, s^2) with s chosen by the encoder from
  the fixed table :data:`STD_TABLE` (its index is sent): a channel the model does not use has
  all-zero symbols and costs one byte.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .entropy import MAX_SYMBOL, gaussian_bits

MIN_QUALITY, MAX_QUALITY, DEFAULT_QUALITY = 0.25, 64.0, 4.0
#: index 0: "channel not coded, every symbol is 0"; 1..255: log-spaced standard deviations
STD_TABLE = np.concatenate([[0.0], np.exp(np.linspace(math.log(0.05), math.log(400.0), 255))])

# grids for network outputs that both sides must reproduce exactly
PRIOR_MEAN_STEP = 2.0 ** -10
PRIOR_LOGVAR_STEP = 2.0 ** -8
MIX_LOGIT_STEP = 2.0 ** -6
MIX_MEAN_STEP = 2.0 ** -12
MIX_LOG_SCALE_STEP = 2.0 ** -8
MIX_COEFF_STEP = 2.0 ** -8


def step_for_quality(quality: float) -> float:
    """Quantization step, in prior standard deviations, of a quality setting."""
    if not MIN_QUALITY <= quality <= MAX_QUALITY:
        raise ValueError(f"quality must be in [{MIN_QUALITY}, {MAX_QUALITY}], got {quality}")
    return 1.0 / quality


def snap(x: Tensor, step: float) -> Tensor:
    """Round a float64 tensor to multiples of ``step`` (exact in binary for power-of-two steps)."""
    return torch.round(x.double() / step) * step


def snap_gaussian(params: Tensor, clamp: float) -> tuple[Tensor, Tensor]:
    """(mu_hat, sigma_hat) from float64 prior parameters (B, 2C, h, w)."""
    mu, logvar = params.double().chunk(2, dim=1)
    logvar = snap(logvar.clamp(-clamp, clamp), PRIOR_LOGVAR_STEP)
    return snap(mu, PRIOR_MEAN_STEP), torch.exp(0.5 * logvar)


def snap_mixture_params(params: Tensor, channels: int, n_mix: int) -> Tensor:
    """Snap every parameter of a logistic mixture to its grid (float64)."""
    p = params.double().clone()
    m, c = n_mix, channels
    p[:, :m] = snap(p[:, :m], MIX_LOGIT_STEP)
    p[:, m:m + m * c] = snap(p[:, m:m + m * c], MIX_MEAN_STEP)
    p[:, m + m * c:m + 2 * m * c] = snap(p[:, m + m * c:m + 2 * m * c], MIX_LOG_SCALE_STEP)
    p[:, m + 2 * m * c:] = snap(p[:, m + 2 * m * c:], MIX_COEFF_STEP)
    return p


def quantize(value: Tensor, mean: Tensor, std: Tensor | float, step: float) -> np.ndarray:
    """Integer symbols ``round((value - mean) / (step * std))``, clipped to the coder's range."""
    k = torch.round((value.double() - mean.double()) / (step * std))
    return k.clamp(-MAX_SYMBOL, MAX_SYMBOL).to(torch.int32).numpy()


#: a dimension whose posterior is at least this wide relative to its prior carries no information
UNUSED_STD_RATIO = 0.9


def quantize_posterior(mu_q: Tensor, std_q: Tensor, mean: Tensor, std: Tensor, step: float) -> np.ndarray:
    """Symbols for a Gaussian posterior N(mu_q, std_q^2) coded under the (snapped) prior
    N(mean, std^2): nearest grid point, except that dimensions the model does not use (posterior
    about as wide as the prior) are sent as 0, the prior mean, which costs almost nothing. The
    choice is the encoder's alone (in the spirit of Yang, Bamler & Mandt 2020, VBQ): the decoder
    needs no side information."""
    sym = quantize(mu_q, mean, std, step)
    unused = (std_q.double() / std.double() >= UNUSED_STD_RATIO).numpy()
    sym[unused] = 0
    return sym


def dequantize(symbols: np.ndarray, mean: Tensor, std: Tensor | float, step: float) -> Tensor:
    """``mean + k * step * std`` in float64."""
    return mean.double() + torch.from_numpy(symbols).double() * step * std


def choose_std_indices(symbols: np.ndarray) -> np.ndarray:
    """Per channel of (1, C, h, w) symbols, the index into :data:`STD_TABLE` that codes them in
    the fewest bits (0 when every symbol is zero)."""
    c = symbols.shape[1]
    out = np.zeros(c, dtype=np.uint8)
    for i in range(c):
        s = symbols[:, i]
        if not s.any():
            continue
        rms = float(np.sqrt(np.mean(s.astype(np.float64) ** 2)))
        centre = int(np.argmin(np.abs(np.log(STD_TABLE[1:]) - math.log(max(rms, 1e-3))))) + 1
        cands = range(max(1, centre - 12), min(len(STD_TABLE), centre + 13))
        out[i] = min(cands, key=lambda j: gaussian_bits(s, float(STD_TABLE[j])))
    return out


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
