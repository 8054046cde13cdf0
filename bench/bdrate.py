"""Bjøntegaard delta metrics and quality at fixed rates.

BD-rate is the average relative rate difference between two rate-quality
curves at equal quality, BD-PSNR the average quality difference at equal rate
(G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves",
ITU-T SG16 Q.6 VCEG-M33, Austin, 2001).  The original fits a cubic polynomial;
here, as in G. Bjøntegaard, "Improvements of the BD-PSNR model", VCEG-AL22
(2008) and the JVET common test conditions (JVET-K1010 / the CTC
spreadsheets), the curve is interpolated *piecewise cubically* with a
monotone Hermite spline (``scipy.interpolate.PchipInterpolator``) and
integrated exactly over the overlapping range only.

Conventions:

- rates in any unit (bpp here), all > 0; the log is natural (the result does
  not depend on the base);
- BD-rate in percent, negative = the test codec needs fewer bits;
- BD-PSNR in dB, positive = the test codec is better;
- ``nan`` when the two curves do not overlap or a curve has < 2 distinct points.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator


def _curve(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """Sort by ``x``, drop non-finite points, average ``y`` over equal ``x``.

    Returns ``None`` if fewer than two distinct ``x`` remain.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"length mismatch: {x.shape} vs {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size == 0:
        return None
    ux, inv = np.unique(x, return_inverse=True)
    uy = np.bincount(inv, weights=y) / np.bincount(inv)
    if ux.size < 2:
        return None
    return ux, uy


def _log_rates(rates: Sequence[float]) -> np.ndarray:
    r = np.asarray(rates, dtype=np.float64)
    if np.any(r[np.isfinite(r)] <= 0):
        raise ValueError("rates must be > 0")
    return np.log(r)


def _mean_difference(x_a, y_a, x_t, y_t) -> float:
    """Mean of ``y_t(x) - y_a(x)`` over the overlap of the two ``x`` ranges."""
    ca = _curve(x_a, y_a)
    ct = _curve(x_t, y_t)
    if ca is None or ct is None:
        return math.nan
    lo = max(ca[0][0], ct[0][0])
    hi = min(ca[0][-1], ct[0][-1])
    if not hi > lo:
        return math.nan
    fa = PchipInterpolator(*ca, extrapolate=False)
    ft = PchipInterpolator(*ct, extrapolate=False)
    return float((ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo))


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_psnr: Sequence[float],
    test_rates: Sequence[float],
    test_psnr: Sequence[float],
) -> float:
    """Bjøntegaard delta rate of *test* vs *anchor*, in percent.

    ``log(rate)`` is interpolated as a piecewise-cubic (PCHIP) function of PSNR
    for each curve; the mean log-rate difference over the overlapping PSNR
    range ``d`` gives ``(exp(d) - 1) * 100``.  A test curve equal to the anchor
    with every rate multiplied by 0.9 gives exactly -10 %.  Returns ``nan`` if
    the PSNR ranges do not overlap.

    References: VCEG-M33 (Bjøntegaard 2001); piecewise-cubic variant
    VCEG-AL22 (2008) / JVET CTC.
    """
    d = _mean_difference(anchor_psnr, _log_rates(anchor_rates), test_psnr, _log_rates(test_rates))
    return math.nan if math.isnan(d) else (math.exp(d) - 1.0) * 100.0


def bd_psnr(
    anchor_rates: Sequence[float],
    anchor_psnr: Sequence[float],
    test_rates: Sequence[float],
    test_psnr: Sequence[float],
) -> float:
    """Bjøntegaard delta PSNR of *test* vs *anchor*, in dB (positive = better).

    PSNR is interpolated piecewise cubically (PCHIP) as a function of
    ``log(rate)``; the mean difference over the overlapping log-rate range is
    returned.  ``nan`` without overlap.  References as :func:`bd_rate`.
    """
    return _mean_difference(_log_rates(anchor_rates), anchor_psnr, _log_rates(test_rates), test_psnr)


def quality_at_rate(
    rates: Sequence[float],
    psnr: Sequence[float],
    target_bpp: float | Iterable[float],
) -> float | list[float]:
    """PSNR (or any quality) interpolated at ``target_bpp``.

    PCHIP in ``log(rate)``, consistent with :func:`bd_psnr`.  ``nan`` outside the
    measured rate range (no extrapolation).  A scalar target gives a float, an
    iterable a list (e.g. ``quality_at_rate(r, p, (0.25, 0.5, 0.75, 1.0))``).
    """
    scalar = np.ndim(target_bpp) == 0
    targets = np.atleast_1d(np.asarray(target_bpp, dtype=np.float64))
    c = _curve(_log_rates(rates), psnr)
    out = np.full(targets.shape, np.nan)
    if c is not None:
        f = PchipInterpolator(*c, extrapolate=False)
        ok = targets > 0
        out[ok] = f(np.log(targets[ok]))
    elif len(rates) == 1:  # single point: exact hit only
        hit = np.isclose(targets, float(np.asarray(rates)[0]), rtol=1e-12, atol=0)
        out[hit] = float(np.asarray(psnr)[0])
    vals = [float(v) for v in out]
    return vals[0] if scalar else vals
