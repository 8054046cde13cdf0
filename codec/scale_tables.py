"""Integer probability tables of the latent symbols, one per :data:`codec.quantize.SCALE_TABLE`
scale (format version 6).

Table j holds the zero-mean Gaussian of standard deviation ``SCALE_TABLE[j]`` quantized to the
integers ``-R_j..R_j`` (``R_j = ceil(TAIL_Z * s_j)``), as counts out of ``2^PRECISION``, then one
escape entry for every symbol outside that range (its count the Gaussian tail mass, at least
:data:`MIN_ESCAPE`). This is the "one table per quantized scale" scheme of Balle et al. 2018
(arXiv:1802.01436, appendix) that CompressAI's ``GaussianConditional`` also uses.

The counts are data, not code: they are computed once (:func:`build_tables`, float64 erf) and
committed as ``scale_tables.npz``, which every encoder and decoder reads (:func:`load_tables`), so
the tables are bit-identical on every machine whatever its libm. The test suite checks that the
file still matches :func:`build_tables` and pins its SHA-256; rebuilding it is a format change.

    python -m ssvcodec.codec.scale_tables --write   # rewrite the file (a new format version)
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .quantize import SCALE_TABLE

#: fixed-point precision of the range coder's models (constriction's default: 24 bits)
PRECISION = 24
#: each table covers the symbols within TAIL_Z standard deviations (the Gaussian tail beyond is < 2^-49)
TAIL_Z = 8.0
#: smallest escape count out of 2^PRECISION: an escape costs at most 16 bits plus its symbol (the
#: priors have heavier tails than a Gaussian), and the reserve costs under 2^-15 bits a symbol
MIN_ESCAPE = 256
TABLES_FILE = Path(__file__).with_name("scale_tables.npz")


class ScaleTables(NamedTuple):
    """``radius[j]``: R_j; ``counts[j]``: int64 counts of symbols -R_j..R_j, then the escape."""

    radius: np.ndarray
    counts: list[np.ndarray]


def _phi(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF in float64."""
    return 0.5 * np.array([math.erfc(-v / math.sqrt(2.0)) for v in x.ravel()]).reshape(x.shape)


def build_tables(scales: np.ndarray = SCALE_TABLE) -> ScaleTables:
    """Compute the tables from the Gaussian CDF (float64): every in-range symbol gets at least
    count 1, the escape at least :data:`MIN_ESCAPE`."""
    total = 2 ** PRECISION
    radius, counts = [], []
    for s in scales:
        r = int(math.ceil(TAIL_Z * float(s)))
        k = np.arange(-r, r + 1, dtype=np.float64)
        p = _phi((k + 0.5) / s) - _phi((k - 0.5) / s)
        tail = 2.0 * (1.0 - _phi(np.array([(r + 0.5) / s]))[0])
        c = np.maximum(1, np.round(p * total)).astype(np.int64)
        radius.append(r)
        counts.append(np.append(c, max(MIN_ESCAPE, int(round(tail * total)))))
    return ScaleTables(np.array(radius, dtype=np.int64), counts)


def save_tables(tables: ScaleTables, path: Path = TABLES_FILE) -> None:
    """Write ``tables`` as a compressed npz of int32: ``radius`` and the counts concatenated."""
    np.savez_compressed(path, radius=tables.radius.astype("<i4"), counts=np.concatenate(tables.counts).astype("<i4"))


@functools.cache
def load_tables(path: Path = TABLES_FILE) -> ScaleTables:
    """The committed tables (read once per process)."""
    with np.load(path) as f:
        radius, flat = f["radius"].astype(np.int64), f["counts"].astype(np.int64)
    ends = np.cumsum(2 * radius + 2)
    if len(radius) != len(SCALE_TABLE) or ends[-1] != len(flat):
        raise ValueError(f"{path}: {len(radius)} tables of {len(flat)} counts do not match the "
                         f"{len(SCALE_TABLE)} scales of codec.quantize.SCALE_TABLE")
    return ScaleTables(radius, np.split(flat, ends[:-1]))


def tables_digest(tables: ScaleTables) -> str:
    """SHA-256 of the tables' integers (radius, then every table's counts, as little-endian int64)."""
    h = hashlib.sha256(tables.radius.astype("<i8").tobytes())
    for c in tables.counts:
        h.update(c.astype("<i8").tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"rewrite {TABLES_FILE.name} from build_tables()")
    args = ap.parse_args(argv)
    built = build_tables()
    if args.write:
        save_tables(built)
    print(f"{len(built.radius)} tables, {sum(len(c) for c in built.counts)} counts, sha256 {tables_digest(built)}")
    if TABLES_FILE.exists():
        print(f"{TABLES_FILE.name}: sha256 {tables_digest(load_tables())}")


if __name__ == "__main__":
    main()
