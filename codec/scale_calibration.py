"""Per-image calibration of the lossless head's Laplace scales (format version 7).

The encoder knows every mean, scale and true value it codes, so it can correct the head where
this image departs from what the head learned (film grain, a camera's noise): for each coded
(stage, channel) of a chunk and each octave of the head's scale it picks an integer shift of the
scale's index on the coder's grid (``b = 2^(i / SCALE_STEPS)`` becomes ``2^((i + s) / SCALE_STEPS)``,
``s`` in -8..7), the one that codes that octave's samples in the fewest bits, and sends the shifts
as side information. This is the adaptive side of classical lossless coders (CALIC's and
JPEG-LS's context statistics, Wu & Memon 1997; Weinberger et al. 2000) on top of a learned model,
done once per image in two passes (the encoder's) instead of sample by sample, so the decoder pays
one table look-up per stage. Measured on Kodak at q = 0 (docs/training.md, session 28): about
0.4 % of the stream.

Block layout, in each Y and X payload before the range-coded data: ``[u8 n]`` then ``n`` rows of
:data:`N_BANDS` nibbles (shift + 8), row j for the chunk's j-th coded (stage, channel) in the
head's coding order, padded to whole bytes; ``n = 0``: no calibration (the encoder writes that
when the shifts would save fewer bits than they cost).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..models.lossless import SCALE_HI, SCALE_LO, SCALE_STEPS, laplace_bits

IDX_LO, IDX_HI = int(SCALE_LO * SCALE_STEPS), int(SCALE_HI * SCALE_STEPS)
#: one band per octave of the scale grid
N_BANDS = (IDX_HI - IDX_LO) // SCALE_STEPS + 1
SHIFTS = np.arange(-8, 8)
_MEAN_GRID = 64  # the finest grid of (value - mean) in a step's units the fit distinguishes


class CalibrationError(ValueError):
    """A calibration block that cannot be read (truncated or out of range)."""


def scale_index(scale: Tensor) -> Tensor:
    """The grid index i of snapped scales ``2^(i / SCALE_STEPS)`` (exact: they are on the grid)."""
    return torch.round(torch.log2(scale) * SCALE_STEPS).long()


def apply_shifts(scale: Tensor, shifts: np.ndarray | None) -> Tensor:
    """Snapped scales with row ``shifts`` (N_BANDS,) applied: index i -> clamp(i + shifts[band(i)])
    on the grid. The same float64 numbers on both sides (computed as :func:`models.lossless.snap_scale` does)."""
    if shifts is None or not np.any(shifts):
        return scale
    idx = scale_index(scale)
    band = (idx - IDX_LO) // SCALE_STEPS
    moved = (idx + torch.from_numpy(np.asarray(shifts, dtype=np.int64))[band]).clamp(IDX_LO, IDX_HI)
    return torch.exp2(moved.to(scale.dtype) / SCALE_STEPS)


def fit_shifts(values: np.ndarray, means: np.ndarray, scales: np.ndarray, step: int = 1) -> tuple[np.ndarray, float]:
    """(shifts per band (N_BANDS,) int, bits saved) for one coded (stage, channel): the shift of
    each octave that minimises the bits of the quantized Laplace (:func:`models.lossless.laplace_bits`)
    of its samples. ``values``: the coded integers (0..255; near-lossless: the quantized residuals),
    ``means`` in the same units, ``scales`` the head's snapped scales (before dividing by the
    near-lossless ``step``). The samples are grouped by (scale index, open edge bin, value - mean
    on a 1/(64 step) grid), so the bits are evaluated once per group, not per sample."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return np.zeros(N_BANDS, dtype=np.int64), 0.0
    if step > 1:
        v = v + 128.0  # residuals: every bin interior, as in the -255..255 family
        m = np.asarray(means, dtype=np.float64).ravel() + 128.0
    else:
        m = np.asarray(means, dtype=np.float64).ravel()
    idx = scale_index(torch.from_numpy(np.asarray(scales, dtype=np.float64).ravel())).numpy()
    grid = _MEAN_GRID * step
    d = np.round((v - m) * grid).astype(np.int64)
    edge = np.where(v <= 0, 1, np.where(v >= 255, 2, 0))
    d = np.where(edge == 0, np.abs(d), d)  # an interior bin's bits depend on |value - mean| only
    span = 2 * 300 * grid + 1
    key = ((idx - IDX_LO) * 3 + edge) * span + (d + 300 * grid)
    uniq, counts = np.unique(key, return_counts=True)
    g_idx = uniq // (3 * span) + IDX_LO
    g_edge = (uniq // span) % 3
    g_d = (uniq % span - 300 * grid) / grid
    g_v = np.where(g_edge == 1, 0.0, np.where(g_edge == 2, 255.0, 128.0))
    tv, tm = torch.from_numpy(g_v)[:, None], torch.from_numpy(g_v - g_d)[:, None]
    moved = (torch.from_numpy(g_idx)[:, None] + torch.from_numpy(SHIFTS)[None]).clamp(IDX_LO, IDX_HI)
    bits = laplace_bits(tv, tm, torch.exp2(moved.double() / SCALE_STEPS) / step).numpy() * counts[:, None]
    band = (g_idx - IDX_LO) // SCALE_STEPS
    per_band = np.zeros((N_BANDS, len(SHIFTS)))
    np.add.at(per_band, band, bits)
    zero = int(np.flatnonzero(SHIFTS == 0)[0])
    best = per_band.argmin(1)
    best = np.where(per_band[np.arange(N_BANDS), best] < per_band[:, zero], best, zero)  # ties keep 0
    saved = float((per_band[:, zero] - per_band[np.arange(N_BANDS), best]).sum())
    return SHIFTS[best].astype(np.int64), saved


def block_size(rows: int) -> int:
    """Bytes of a block of ``rows`` rows."""
    return 1 + (rows * N_BANDS + 1) // 2 if rows else 1


def pack(table: np.ndarray | None) -> bytes:
    """A block from shifts (n, N_BANDS) (None or n = 0: no calibration)."""
    if table is None or len(table) == 0:
        return b"\x00"
    t = np.asarray(table, dtype=np.int64)
    if t.ndim != 2 or t.shape[1] != N_BANDS or len(t) > 255 or t.min() < SHIFTS[0] or t.max() > SHIFTS[-1]:
        raise ValueError(f"calibration table must be (n <= 255, {N_BANDS}) in {SHIFTS[0]}..{SHIFTS[-1]}, got {t.shape}")
    nib = (t.ravel() - SHIFTS[0]).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return bytes([len(t)]) + (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()


def unpack(data: bytes | memoryview, offset: int = 0) -> tuple[np.ndarray, int]:
    """(shifts (n, N_BANDS), offset after the block) from the block at ``offset`` of ``data``."""
    if offset >= len(data):
        raise CalibrationError("calibration block missing")
    n = data[offset]
    end = offset + block_size(n)
    if end > len(data):
        raise CalibrationError("calibration block truncated")
    raw = np.frombuffer(bytes(data[offset + 1:end]), dtype=np.uint8)
    nib = np.stack([raw & 15, raw >> 4], 1).ravel()[:n * N_BANDS].astype(np.int64)
    return (nib + SHIFTS[0]).reshape(n, N_BANDS), end
