"""The latent symbols' entropy coding: per-scale tables (format version 6) against the quantized
Gaussian per symbol (versions 2-5)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssvcodec.codec.entropy import MAX_SYMBOL, ChunkDecoder, ChunkEncoder, EntropyDecodeError
from ssvcodec.codec.quantize import SCALE_TABLE
from ssvcodec.codec.scale_tables import (MIN_ESCAPE, PRECISION, TABLES_FILE, build_tables, load_tables,
                                         tables_digest)

#: the committed tables of format version 6; a new digest is a new format version
TABLES_SHA256 = "efd62342bed07fc4447250f1b80f5eba1dea6640180fde5cd58392861d37efb0"


def test_committed_tables_are_the_built_ones_and_pinned() -> None:
    committed, built = load_tables(), build_tables()
    assert tables_digest(committed) == TABLES_SHA256 == tables_digest(built), f"{TABLES_FILE} changed"
    for r, c, s in zip(committed.radius, committed.counts, SCALE_TABLE):
        assert len(c) == 2 * r + 2 and c.min() >= 1 and c[-1] >= MIN_ESCAPE
        assert abs(int(c.sum()) - 2 ** PRECISION) < 2 ** PRECISION // 1000
        assert np.argmax(c[:-1]) == r and r >= 8 * s    # the mode at symbol 0, eight sigmas covered


def _roundtrip(symbols: np.ndarray, idx: np.ndarray) -> bytes:
    enc = ChunkEncoder()
    enc.tabled(symbols, idx)
    data = enc.finish()
    assert np.array_equal(ChunkDecoder(data).tabled(idx), symbols)
    return data


def test_tables_code_gaussian_symbols_as_small_as_the_per_symbol_gaussian() -> None:
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(SCALE_TABLE), (6, 50, 70))
    sym = np.round(rng.standard_normal(idx.shape) * SCALE_TABLE[idx]).astype(np.int32)
    tabled = _roundtrip(sym, idx)
    enc = ChunkEncoder()
    enc.gaussian(sym, SCALE_TABLE[idx])
    assert abs(len(tabled) - len(enc.finish())) < 0.005 * len(tabled)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SCALE_TABLE) - 1), st.integers(-MAX_SYMBOL, MAX_SYMBOL)),
                min_size=0, max_size=300))
def test_any_symbol_round_trips_escapes_included(pairs: list[tuple[int, int]]) -> None:
    idx = np.array([p[0] for p in pairs], dtype=np.int64)
    sym = np.array([p[1] for p in pairs], dtype=np.int32)
    _roundtrip(sym, idx)


def test_parts_read_back_in_order_and_garbage_is_an_error_or_a_wrong_value() -> None:
    rng = np.random.default_rng(1)
    parts = [(np.round(rng.standard_normal(n) * 3).astype(np.int32), rng.integers(0, 64, n)) for n in (40, 0, 75)]
    enc = ChunkEncoder()
    for s, i in parts:
        enc.tabled(s, i)
    dec = ChunkDecoder(enc.finish())
    assert all(np.array_equal(dec.tabled(i), s) for s, i in parts)
    for seed in range(20):
        junk = np.random.default_rng(seed).integers(0, 256, 64, dtype=np.uint8).tobytes()
        try:
            out = ChunkDecoder(junk).tabled(rng.integers(0, 64, 500))
        except EntropyDecodeError:
            continue
        assert out.dtype == np.int32 and np.abs(out).max() <= MAX_SYMBOL


def test_empty_and_bad_payloads() -> None:
    assert ChunkDecoder(b"").tabled(np.zeros((0, 3), dtype=np.int64)).shape == (0, 3)
    with pytest.raises(EntropyDecodeError, match="32-bit words"):
        ChunkDecoder(b"abc")
