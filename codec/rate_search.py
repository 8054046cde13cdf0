"""The one rate search of the codec: bisection on the quality knob until a stream has a target
size. Used by ``ssvcodec encode --bpp / --size`` and by the benchmarks."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateResult:
    quality: float
    data: bytes
    tries: int

    def relative_error(self, target_bytes: float) -> float:
        return len(self.data) / target_bytes - 1.0


def search_quality(encode: Callable[[float], bytes], target_bytes: float, lo: float, hi: float,
                   tolerance: float = 0.02, step: float = 0.01, max_tries: int = 20) -> RateResult:
    """The encoding whose size is nearest ``target_bytes`` found by bisection of the quality in
    [lo, hi] on a grid of ``step`` (the stream's size grows with the quality). Stops once within
    ``tolerance`` (relative); returns the nearest size seen, so a target outside the reachable
    range gives the end of the range (the caller reports the miss)."""
    if target_bytes <= 0:
        raise ValueError(f"target size must be positive, got {target_bytes}")
    tried: dict[float, bytes] = {}

    def at(q: float) -> bytes:
        q = round(round(q / step) * step, 6)
        if q not in tried:
            tried[q] = encode(q)
        return tried[q]

    def best() -> RateResult:
        q = min(tried, key=lambda v: abs(len(tried[v]) - target_bytes))
        return RateResult(q, tried[q], len(tried))

    if len(at(hi)) <= target_bytes or len(at(lo)) >= target_bytes:
        return best()
    a, b = lo, hi
    while b - a > step * 1.5 and len(tried) < max_tries:
        mid = (a + b) / 2
        size = len(at(mid))
        if abs(size / target_bytes - 1.0) <= tolerance:
            break
        if size < target_bytes:
            a = mid
        else:
            b = mid
    return best()
