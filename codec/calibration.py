"""Per-image calibration of the lossless head's Laplaces (format version 7).

The encoder knows every mean, scale and true value it codes, so it can correct the head where
this image departs from what the head learned (film grain, a scanner's or a camera's colour
processing): for each coded (stage, channel) of a chunk and each octave of the head's scale it
picks an offset of the mean, in eighths of a level (-1..7/8), and a shift of the scale's index
on the coder's grid (``b = 2^(i / SCALE_STEPS)`` becomes ``2^((i + s) / SCALE_STEPS)``, s in
-8..7): first the offset that codes that octave's samples in the fewest bits, then the shift given
the offset. It sends both as side information. This is the adaptive side of classical lossless
coders (CALIC's bias cancellation and JPEG-LS's context statistics: Wu & Memon 1997, Weinberger
et al. 2000) on top of a learned model, done once per image in two passes (the encoder's) instead
of sample by sample, so the decoder pays one table look-up per stage. Measured at q = 0 (session
28, docs/training.md): about 1.4-2 % of a lossless Kodak stream, where the head's G and B means
sit a third to a half of a level off on the most predictable samples.

Block layout, in each Y and X payload before the range-coded data: ``[u8 n]`` then ``n`` rows of
:data:`N_BANDS` shift nibbles (shift + 8) and :data:`N_BANDS` offset nibbles (8 offset + 8), low
nibble first: 11 bytes a row. Row j belongs to the chunk's j-th coded (stage, channel) in the
head's coding order; ``n = 0``: no calibration (the encoder writes that when the calibration would
save fewer bits than it costs).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..models.lossless import SCALE_HI, SCALE_LO, SCALE_STEPS, laplace_bits

IDX_LO, IDX_HI = int(SCALE_LO * SCALE_STEPS), int(SCALE_HI * SCALE_STEPS)
#: one band per octave of the scale grid
N_BANDS = (IDX_HI - IDX_LO) // SCALE_STEPS + 1
#: scale index shifts and mean offsets (in 1/OFFSET_STEPS of a level) a block can hold
SHIFTS = np.arange(-8, 8)
OFFSETS = np.arange(-8, 8)
OFFSET_STEPS = 8
ROW_BYTES = N_BANDS  # 2 N_BANDS nibbles
_GRID = 64  # value - mean lies on a 1/(64 step) grid: means are snapped to 1/64, offsets to 1/8


class CalibrationError(ValueError):
    """A calibration block that cannot be read (truncated)."""


def scale_index(scale: Tensor) -> Tensor:
    """The grid index i of snapped scales ``2^(i / SCALE_STEPS)`` (exact: they are on the grid)."""
    return torch.round(torch.log2(scale) * SCALE_STEPS).long()


def apply(mean: Tensor, scale: Tensor, row: np.ndarray | None) -> tuple[Tensor, Tensor]:
    """The calibrated (mean, scale) of snapped ones under ``row`` (2, N_BANDS): shifts and offsets,
    by the band (octave) of each scale's index i: mean + offset / 8 and 2^(clamp(i + shift) / 8).
    The same float64 numbers on both sides (exact in float64; the scale computed as
    :func:`models.lossless.snap_scale` does)."""
    if row is None or not np.any(row):
        return mean, scale
    idx = scale_index(scale)
    band = (idx - IDX_LO) // SCALE_STEPS
    shifts, offsets = (torch.from_numpy(np.asarray(r, dtype=np.int64)) for r in row)
    moved = (idx + shifts[band]).clamp(IDX_LO, IDX_HI)
    return mean + offsets[band].to(mean.dtype) / OFFSET_STEPS, torch.exp2(moved.to(scale.dtype) / SCALE_STEPS)


def fit(values: np.ndarray, means: np.ndarray, scales: np.ndarray, step: int = 1) -> tuple[np.ndarray, float]:
    """(row (2, N_BANDS): shifts and offsets, bits saved) for one coded (stage, channel): per
    octave of the scale, the mean offset that minimises the bits of the quantized Laplace
    (:func:`models.lossless.laplace_bits`) of its samples, then the scale shift given that offset
    (ties keep 0). ``values``: the coded integers (0..255; near-lossless: the quantized residuals),
    ``means`` in the same units, ``scales`` the head's snapped scales (before dividing by the
    near-lossless ``step``). The samples are grouped by (scale index, open edge bin, value - mean
    on a 1/(64 step) grid), so the bits are evaluated once per group, not per sample."""
    row = np.zeros((2, N_BANDS), dtype=np.int64)
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return row, 0.0
    m = np.asarray(means, dtype=np.float64).ravel()
    if step > 1:
        v, m = v + 128.0, m + 128.0  # residuals: every bin interior, as in the -255..255 family
    idx = scale_index(torch.from_numpy(np.asarray(scales, dtype=np.float64).ravel())).numpy()
    grid = _GRID * step
    d = np.round((v - m) * grid).astype(np.int64)
    edge = np.where(v <= 0, 1, np.where(v >= 255, 2, 0))
    half = 300 * grid
    key = ((idx - IDX_LO) * 3 + edge) * (2 * half + 1) + (d + half)
    uniq, counts = np.unique(key, return_counts=True)
    g_idx = uniq // (3 * (2 * half + 1)) + IDX_LO
    g_edge = (uniq // (2 * half + 1)) % 3
    g_v = np.where(g_edge == 1, 0.0, np.where(g_edge == 2, 255.0, 128.0))
    tv = torch.from_numpy(g_v)[:, None]
    tm = torch.from_numpy(g_v - (uniq % (2 * half + 1) - half) / grid)[:, None]
    ti = torch.from_numpy(g_idx)[:, None]
    band = (g_idx - IDX_LO) // SCALE_STEPS
    w = torch.from_numpy(counts.astype(np.float64))[:, None]

    def per_band(shift: Tensor, offset: Tensor) -> np.ndarray:
        b = torch.exp2((ti + shift).clamp(IDX_LO, IDX_HI).double() / SCALE_STEPS) / step
        bits = (laplace_bits(tv, tm + offset.double() / (OFFSET_STEPS * step), b) * w).numpy()
        out = np.zeros((N_BANDS, bits.shape[1]))
        np.add.at(out, band, bits)
        return out

    def choose(costs: np.ndarray, options: np.ndarray) -> np.ndarray:
        zero = int(np.flatnonzero(options == 0)[0])
        best = costs.argmin(1)
        return np.where(costs[np.arange(N_BANDS), best] < costs[:, zero], options[best], 0)

    none = torch.zeros(1, 1, dtype=torch.long)
    by_offset = per_band(none, torch.from_numpy(OFFSETS)[None])
    row[1] = choose(by_offset, OFFSETS)
    by_shift = per_band(torch.from_numpy(SHIFTS)[None], torch.from_numpy(row[1])[band][:, None])
    row[0] = choose(by_shift, SHIFTS)
    base = by_offset[:, int(np.flatnonzero(OFFSETS == 0)[0])].sum()
    final = by_shift[np.arange(N_BANDS), row[0] - SHIFTS[0]].sum()
    return row, float(base - final)


def block_size(rows: int) -> int:
    """Bytes of a block of ``rows`` rows."""
    return 1 + rows * ROW_BYTES


def pack(table: np.ndarray | None) -> bytes:
    """A block from rows (n, 2, N_BANDS) (None or n = 0: no calibration)."""
    if table is None or len(table) == 0:
        return b"\x00"
    t = np.asarray(table, dtype=np.int64)
    if (t.ndim != 3 or t.shape[1:] != (2, N_BANDS) or len(t) > 255 or t[:, 0].min() < SHIFTS[0]
            or t[:, 0].max() > SHIFTS[-1] or t[:, 1].min() < OFFSETS[0] or t[:, 1].max() > OFFSETS[-1]):
        raise ValueError(f"calibration table must be (n <= 255, 2, {N_BANDS}) of shifts in {SHIFTS[0]}..{SHIFTS[-1]} "
                         f"and offsets in {OFFSETS[0]}..{OFFSETS[-1]}, got {t.shape}")
    nib = np.concatenate([t[:, 0] - SHIFTS[0], t[:, 1] - OFFSETS[0]], 1).astype(np.uint8).ravel()
    return bytes([len(t)]) + (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()


def unpack(data: bytes | memoryview, offset: int = 0) -> tuple[np.ndarray, int]:
    """(rows (n, 2, N_BANDS), offset after the block) from the block at ``offset`` of ``data``."""
    if offset >= len(data):
        raise CalibrationError("calibration block missing")
    n = data[offset]
    end = offset + block_size(n)
    if end > len(data):
        raise CalibrationError("calibration block truncated")
    raw = np.frombuffer(bytes(data[offset + 1:end]), dtype=np.uint8)
    nib = np.stack([raw & 15, raw >> 4], 1).reshape(n, 2, N_BANDS).astype(np.int64)
    return np.stack([nib[:, 0] + SHIFTS[0], nib[:, 1] + OFFSETS[0]], 1), end
