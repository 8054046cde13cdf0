"""Golden streams of every format version the codec decodes (recorded by ``python -m ssvcodec.bench.golden``):
each decodes, level by level, to PNGs with the recorded SHA-256, so any change to the model, the
coder or the container that alters decoding fails here. A lossless stream (format version 8, 7, 6 or 4)
renders every level in exact integer arithmetic and must match exactly. A lossy one (version 8, 7, 6,
5 or 2) renders in float32 on every thread: on another CPU kind a level may instead match its recorded
PNG up to float32 rounding (:func:`ssvcodec.bench.golden.renders_agree`); its symbols are exact
either way, or the level's checksum refuses the decode. Format versions 1 (the ELBO model) and 3 (session 8's
lossless streams) are no longer decoded."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from ssvcodec.bench.golden import GOLDEN, png_sha256, renders_agree
from ssvcodec.codec.bitstream import read_stream


@pytest.mark.parametrize("name,version,lossless", [("rd-v8", 8, False), ("rd-v8-lossless-jpeg", 8, True),
                                                   ("rd-v7", 7, False), ("rd-v7-lossless", 7, True),
                                                   ("rd-v7-lossless-rgb", 7, True),
                                                   ("rd-v6", 6, False), ("rd-v6-lossless", 6, True),
                                                   ("rd-v5", 5, False), ("rd-v4", 4, True), ("rd-v2", 2, False)])
def test_golden_stream_decodes_to_its_recorded_pixels(name: str, version: int, lossless: bool) -> None:
    from ssvcodec.codec.rd_api import RDCodec
    from ssvcodec.models.io import WEIGHTS_DIR, weights_fingerprint

    meta = json.loads((GOLDEN / f"{name}.json").read_text())
    weights = WEIGHTS_DIR / meta["weights"]
    if not weights.exists():
        pytest.skip(f"shipped weights {weights} are absent")
    head = WEIGHTS_DIR / meta.get("lossless_weights", "-")
    if lossless and not head.exists():
        pytest.skip(f"shipped lossless head {head} is absent")
    data = (GOLDEN / meta["stream"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["stream_sha256"]
    header = read_stream(data).header
    assert header.version == version
    assert header.fingerprint == weights_fingerprint(weights)[:len(header.fingerprint)], \
        "the golden stream was recorded with other weights: re-record it"
    codec = RDCodec(weights, lossless_weights=head) if lossless else RDCodec(weights)
    steps = list(codec.decode_progressive(data))
    assert [str(s.level) for s in steps] == list(meta["png_sha256"])
    if lossless:  # exact renders and the exact head: the same pixels on every CPU kind, the last the input
        assert all(png_sha256(s.image) == meta["png_sha256"][str(s.level)] for s in steps)
        assert meta["png_sha256"][str(steps[-1].level)] == meta["input_png_sha256"]
    for s in steps:
        lv = str(s.level)
        if png_sha256(s.image) == meta["png_sha256"][lv]:
            continue
        assert not lossless and lv in meta.get("png", {}), f"level {lv} decodes to other pixels than recorded"
        want = np.asarray(Image.open(GOLDEN / meta["png"][lv]))
        ok, how = renders_agree(s.image, want)
        assert ok, f"level {lv} differs from its recorded render beyond float32 rounding: {how}"


def test_renders_agree_tells_rounding_from_a_change() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    b = a.copy()
    b[3, 4, 1] = a[3, 4, 1] ^ 1 if a[3, 4, 1] < 255 else 254  # one sample one off
    assert renders_agree(a, b)[0]
    c = a.copy()
    c[0, 0, 0] = (int(a[0, 0, 0]) + 2) % 256                  # one sample two off
    assert not renders_agree(a, c)[0]
    d = np.clip(a.astype(np.int16) + (rng.random(a.shape) < 0.01), 0, 255).astype(np.uint8)  # 1 % one off
    assert not renders_agree(a, d)[0]
    assert not renders_agree(a, a[:32])[0]
