"""Golden streams of every supported format version (recorded by ``python -m ssvcodec.bench.golden``):
each decodes, level by level, to PNGs with the recorded SHA-256, so any change to the model, the
coder or the container that alters decoding fails here."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssvcodec.codec.bitstream import read_stream

GOLDEN = Path(__file__).resolve().parent / "golden"


def png_sha256(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return hashlib.sha256(buf.getvalue()).hexdigest()


@pytest.mark.parametrize("name,version", [("rd-v2", 2), ("elbo-v1", 1)])
def test_golden_stream_decodes_to_its_recorded_pixels(name: str, version: int) -> None:
    from ssvcodec.models.io import WEIGHTS_DIR

    meta = json.loads((GOLDEN / f"{name}.json").read_text())
    weights = WEIGHTS_DIR / meta["weights"]
    if not weights.exists():
        pytest.skip(f"shipped weights {weights} are absent")
    data = (GOLDEN / meta["stream"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["stream_sha256"]
    assert read_stream(data).header.version == version
    if version == 2:
        from ssvcodec.codec.rd_api import RDCodec
        codec = RDCodec(weights)
    else:
        from ssvcodec.codec.api import Codec
        codec = Codec(weights)
    got = {str(s.level): png_sha256(s.image) for s in codec.decode_progressive(data)}
    assert got == meta["png_sha256"]
