"""The lossless head's per-image calibration (codec/calibration.py): the fit finds a known
mis-scaling and a known bias, leaves a calibrated model alone, and the block round-trips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssvcodec.codec import calibration
from ssvcodec.models.lossless import SCALE_STEPS, laplace_bits, snap_scale


def laplace_samples(n: int, mean: float, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(mean + rng.laplace(0.0, scale, n)), 0, 255)


def band_of(idx: int) -> int:
    return (idx - calibration.IDX_LO) // SCALE_STEPS


def bits(v: np.ndarray, mean: np.ndarray, scale: np.ndarray, row: np.ndarray | None) -> float:
    m, b = calibration.apply(torch.from_numpy(mean), torch.from_numpy(scale), row)
    return laplace_bits(torch.from_numpy(v), m, b).sum().item()


def test_the_fit_undoes_a_known_mis_scaling() -> None:
    true_idx, told_idx = 12, 8                  # the head says b = 2, the samples have b = 2^1.5
    v = laplace_samples(20000, 100.3, 2 ** (true_idx / SCALE_STEPS), 0)
    means = np.full(v.size, 100.3125)
    told = np.full(v.size, 2.0 ** (told_idx / SCALE_STEPS))
    row, saved = calibration.fit(v, means, told)
    assert abs(row[0, band_of(told_idx)] - (true_idx - told_idx)) <= 1 and abs(row[1, band_of(told_idx)]) <= 1
    assert np.count_nonzero(row[:, np.arange(calibration.N_BANDS) != band_of(told_idx)]) == 0  # empty bands stay 0
    before, after = bits(v, means, told, None), bits(v, means, told, row)
    assert saved == pytest.approx(before - after, rel=1e-6) and saved > 0.01 * before


def test_the_fit_finds_a_biased_mean_at_a_small_scale() -> None:
    v = laplace_samples(20000, 50.0, 0.6, 4)      # the samples centre on 50, the head says 49.625
    told = snap_scale(torch.full((v.size,), 0.6)).numpy()
    row, saved = calibration.fit(v, np.full(v.size, 49.625), told)
    band = band_of(int(calibration.scale_index(torch.tensor(told[:1]))[0]))
    assert row[1, band] == 3 and saved > 0.05 * bits(v, np.full(v.size, 49.625), told, None)


def test_a_calibrated_model_is_left_alone() -> None:
    v = laplace_samples(20000, 60.0, 3.0, 1)
    row, saved = calibration.fit(v, np.full(v.size, 60.0), snap_scale(torch.full((v.size,), 3.0)).numpy())
    assert np.abs(row).max() <= 1 and saved < 0.002 * 20000 * 3


def test_near_lossless_residuals_are_fitted_in_step_units() -> None:
    step = 5
    resid = np.round(np.random.default_rng(2).laplace(0.0, 8.0, 20000) / step)  # residuals with b = 8
    told = np.full(resid.size, 4.0)             # the head says b = 4
    row, _ = calibration.fit(resid, np.zeros(resid.size), told, step)
    assert abs(row[0, band_of(16)] - SCALE_STEPS) <= 1


def test_rows_move_the_index_on_the_grid_and_offset_the_mean() -> None:
    idx = torch.tensor([-24, -20, 0, 7, 8, 55, 56])
    scale = torch.exp2(idx.double() / SCALE_STEPS)
    mean = torch.full((7,), 10.015625, dtype=torch.float64)
    row = np.zeros((2, calibration.N_BANDS), dtype=np.int64)
    row[0, 0], row[0, 3], row[0, 4], row[0, -1] = -3, 2, -8, 7
    row[1, 3], row[1, 4] = -8, 7
    m, b = calibration.apply(mean, scale, row)
    assert calibration.scale_index(b).tolist() == [-24, -23, 2, 9, 0, 55, 56]
    assert (m - mean).tolist() == [0, 0, -1, -1, 0.875, 0, 0]
    assert calibration.apply(mean, scale, None) == (mean, scale)


def test_blocks_round_trip_and_refuse_bad_tables() -> None:
    rng = np.random.default_rng(3)
    table = rng.integers(-8, 8, (9, 2, calibration.N_BANDS))
    data = b"xy" + calibration.pack(table) + b"rest"
    got, end = calibration.unpack(data, 2)
    assert np.array_equal(got, table) and data[end:] == b"rest"
    assert len(calibration.pack(table)) == calibration.block_size(9) == 1 + 9 * 11
    assert calibration.pack(None) == b"\x00" and calibration.unpack(b"\x00", 0)[0].shape == (0, 2, calibration.N_BANDS)
    with pytest.raises(ValueError):
        calibration.pack(np.full((1, 2, calibration.N_BANDS), 8))
    with pytest.raises(calibration.CalibrationError, match="truncated"):
        calibration.unpack(calibration.pack(table)[:-1], 0)
