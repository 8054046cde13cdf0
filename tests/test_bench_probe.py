"""bench.probe: its ideal bits and PSNRs are those of the codec's real streams."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssvcodec.bench import probe
from ssvcodec.bench.metrics import psnr
from ssvcodec.codec.bitstream import truncate_levels
from ssvcodec.codec.rd_api import DEFAULT_RD_WEIGHTS, RDCodec

from .conftest import synthetic


def test_probe_measures_what_the_codec_codes() -> None:
    """On the shipped weights (a trained model: an untrained one's latents run off the coder's
    tables): the probe's ideal bits are within 3 % of the codec's estimates less each level's
    32-bit checksum, and its PSNRs those of the decoded levels."""
    if not DEFAULT_RD_WEIGHTS.exists():
        pytest.skip(f"shipped weights {DEFAULT_RD_WEIGHTS} are absent")
    img = synthetic(64, 96, 4)
    model = probe.load_model(DEFAULT_RD_WEIGHTS)
    rows = probe.measure(model, [img], [1.0, 6.0])
    codec = RDCodec(DEFAULT_RD_WEIGHTS)
    for q in (1.0, 6.0):
        data, report = codec.encode_with_report(img, quality=q)
        bits = np.cumsum([r["estimated_bits"] - 32 for r in report]) / img.shape[0] / img.shape[1]
        assert rows[str(q)]["bpp"] == pytest.approx(bits.tolist(), rel=0.03)  # the coder snaps scales to a 64-entry table
        for k in (1, 2, 3):
            shown = codec.decode(truncate_levels(data, k))
            assert rows[str(q)]["psnr"][k - 1] == pytest.approx(psnr(shown, img), abs=0.05)
    assert probe.parse_qualities("-1:2") == [-1.0, 0.0, 1.0, 2.0] and probe.parse_qualities("0.5,3") == [0.5, 3.0]
