"""Image quality metrics on 8-bit RGB images, as in the measurement protocol (§4).

All functions take ``numpy`` arrays of dtype ``uint8`` and shape ``(H, W, 3)``:
the decoded image *after* rounding to 8 bits, and the original.

- :func:`mse`, :func:`psnr` -- over all sub-pixels, peak 255.
- :func:`ms_ssim` -- multi-scale SSIM (Wang, Simoncelli & Bovik 2003) on RGB via
  ``pytorch_msssim`` with ``data_range=255`` (mean over the three channels).
- :func:`bpp` -- ``8 * bytes / (H * W)`` of the original image.
"""

from __future__ import annotations

import math

import numpy as np

PEAK = 255.0

# Weights of the 5 scales from Wang et al. 2003 (the pytorch_msssim default).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {a.dtype} and {b.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected HxWx3 RGB images, got shape {a.shape}")
    return a, b


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over all sub-pixels of two uint8 HxWx3 images."""
    a, b = _check_pair(a, b)
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(d * d))


def psnr_from_mse(m: float) -> float:
    """``10 log10(255^2 / m)``; ``inf`` for ``m == 0``."""
    if m <= 0.0:
        return math.inf
    return 10.0 * math.log10(PEAK * PEAK / m)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 HxWx3 images (peak 255); ``inf`` if identical."""
    return psnr_from_mse(mse(a, b))


def bpp(n_bytes: int, h: int, w: int) -> float:
    """Bits per pixel: ``8 * n_bytes / (h * w)`` (whole file, header included)."""
    if h <= 0 or w <= 0:
        raise ValueError(f"bad image size {h}x{w}")
    return 8.0 * n_bytes / (h * w)


def ms_ssim_scales(h: int, w: int, win_size: int = 11) -> int:
    """Number of MS-SSIM scales (at most 5) usable for an ``h x w`` image.

    ``pytorch_msssim`` requires ``min(h, w) > (win_size - 1) * 2**4`` for its 5
    scales (161 px with the 11-tap window).  Smaller images use the largest
    ``n`` with ``min(h, w) > (win_size - 1) * 2**(n - 1)``; 0 means that not even
    one full window fits.
    """
    side = min(h, w)
    for n in range(5, 0, -1):
        if side > (win_size - 1) * 2 ** (n - 1):
            return n
    return 0


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two uint8 HxWx3 images (``data_range=255``), mean over RGB.

    Images of at least 161 px on the shorter side get the standard 5-scale
    MS-SSIM of ``pytorch_msssim.ms_ssim`` (11-tap Gaussian window, sigma 1.5).

    Smaller images fall back gracefully (documented deviation from the
    standard): only the first ``n = ms_ssim_scales(h, w)`` scales are used and
    their weights are renormalised to sum to 1; the coarsest used scale
    contributes the full SSIM term as usual.  Below 11 px the window shrinks
    to the largest odd size that fits (single scale, i.e. plain SSIM).
    Values from the fallback are not comparable with 5-scale values.
    """
    import importlib

    import pytorch_msssim
    import torch

    a, b = _check_pair(a, b)
    x = torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1)[None].float()
    y = torch.from_numpy(np.array(b, copy=True)).permute(2, 0, 1)[None].float()
    h, w = a.shape[:2]
    n = ms_ssim_scales(h, w)
    with torch.no_grad():
        if n == 5:
            return float(pytorch_msssim.ms_ssim(x, y, data_range=PEAK, size_average=True))
        # Fallback: fewer scales, renormalised weights (uses the library's
        # per-scale _ssim so the single-scale maths is identical).
        ssim_module = importlib.import_module("pytorch_msssim.ssim")
        win_size = 11
        if n == 0:
            n = 1
            win_size = max(1, min(h, w) - (1 - min(h, w) % 2))  # largest odd <= side
        weights = torch.tensor(MS_SSIM_WEIGHTS[:n], dtype=torch.float32)
        weights = weights / weights.sum()
        win = ssim_module._fspecial_gauss_1d(win_size, 1.5)
        win = win.repeat([x.shape[1], 1, 1, 1])
        mcs = []
        for i in range(n):
            ssim_pc, cs = ssim_module._ssim(x, y, data_range=PEAK, win=win, size_average=False)
            if i < n - 1:
                mcs.append(torch.relu(cs))
                padding = [s % 2 for s in x.shape[2:]]
                x = torch.nn.functional.avg_pool2d(x, kernel_size=2, padding=padding)
                y = torch.nn.functional.avg_pool2d(y, kernel_size=2, padding=padding)
        stack = torch.stack(mcs + [torch.relu(ssim_pc)], dim=0)
        val = torch.prod(stack ** weights.view(-1, 1, 1), dim=0)
        return float(val.mean())


def ms_ssim_db(value: float) -> float:
    """MS-SSIM in dB, ``-10 log10(1 - value)`` (``inf`` for 1)."""
    if value >= 1.0:
        return math.inf
    return -10.0 * math.log10(1.0 - value)
