"""The lossless head's per-image scale calibration (codec/scale_calibration.py): the fit finds a
known mis-scaling, leaves a calibrated model alone, and the block round-trips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssvcodec.codec import scale_calibration as calibration
from ssvcodec.models.lossless import SCALE_STEPS, laplace_bits, snap_scale


def laplace_samples(n: int, mean: float, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(mean + rng.laplace(0.0, scale, n)), 0, 255)


def test_the_fit_undoes_a_known_mis_scaling() -> None:
    true_idx, told_idx = 12, 8                  # the head says b = 2, the samples have b = 2^1.5
    v = laplace_samples(20000, 100.3, 2 ** (true_idx / SCALE_STEPS), 0)
    means = np.full(v.size, 100.3125)
    told = np.full(v.size, 2.0 ** (told_idx / SCALE_STEPS))
    shifts, saved = calibration.fit_shifts(v, means, told)
    band = (told_idx - calibration.IDX_LO) // SCALE_STEPS
    assert abs(shifts[band] - (true_idx - told_idx)) <= 1
    assert np.count_nonzero(shifts) == 1        # bands without samples stay 0
    before = laplace_bits(torch.from_numpy(v), torch.from_numpy(means), torch.from_numpy(told)).sum().item()
    after = laplace_bits(torch.from_numpy(v), torch.from_numpy(means),
                         calibration.apply_shifts(torch.from_numpy(told), shifts)).sum().item()
    assert saved == pytest.approx(before - after, rel=1e-6) and saved > 0.01 * before


def test_a_calibrated_model_is_left_alone() -> None:
    v = laplace_samples(20000, 60.0, 3.0, 1)
    shifts, saved = calibration.fit_shifts(v, np.full(v.size, 60.0), snap_scale(torch.full((v.size,), 3.0)).numpy())
    assert np.abs(shifts).max() <= 1 and saved < 0.002 * 20000 * 3


def test_near_lossless_residuals_are_fitted_in_step_units() -> None:
    step = 5
    resid = np.round(np.random.default_rng(2).laplace(0.0, 8.0, 20000) / step)  # residuals with b = 8
    told = np.full(resid.size, 4.0)             # the head says b = 4
    shifts, _ = calibration.fit_shifts(resid, np.zeros(resid.size), told, step)
    assert abs(shifts[(16 - calibration.IDX_LO) // SCALE_STEPS] - SCALE_STEPS) <= 1


def test_shifts_move_the_index_on_the_grid_and_stay_in_range() -> None:
    idx = torch.tensor([-24, -20, 0, 7, 8, 55, 56])
    scale = torch.exp2(idx.double() / SCALE_STEPS)
    shifts = np.zeros(calibration.N_BANDS, dtype=np.int64)
    shifts[0], shifts[3], shifts[4], shifts[-1] = -3, 2, -8, 7
    got = calibration.scale_index(calibration.apply_shifts(scale, shifts))
    assert got.tolist() == [-24, -23, 2, 9, 0, 55, 56]
    assert calibration.apply_shifts(scale, None) is scale


def test_blocks_round_trip_and_refuse_bad_tables() -> None:
    table = np.random.default_rng(3).integers(-8, 8, (9, calibration.N_BANDS))
    data = b"xy" + calibration.pack(table) + b"rest"
    got, end = calibration.unpack(data, 2)
    assert np.array_equal(got, table) and data[end:] == b"rest"
    assert len(calibration.pack(table)) == calibration.block_size(9)
    assert calibration.pack(None) == b"\x00" and calibration.unpack(b"\x00", 0)[0].shape == (0, calibration.N_BANDS)
    with pytest.raises(ValueError):
        calibration.pack(np.full((1, calibration.N_BANDS), 8))
    with pytest.raises(calibration.CalibrationError, match="truncated"):
        calibration.unpack(calibration.pack(table)[:-1], 0)
