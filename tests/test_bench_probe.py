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
    symbol checksum, and its PSNRs those of the decoded levels."""
    from ssvcodec.codec.bitstream import FORMAT_VERSION
    from ssvcodec.codec.rd_coder import symbol_check_size

    if not DEFAULT_RD_WEIGHTS.exists():
        pytest.skip(f"shipped weights {DEFAULT_RD_WEIGHTS} are absent")
    img = synthetic(64, 96, 4)
    model = probe.load_model(DEFAULT_RD_WEIGHTS)
    rows = probe.measure(model, [img], [1.0, 6.0])
    codec = RDCodec(DEFAULT_RD_WEIGHTS)
    for q in (1.0, 6.0):
        data, report = codec.encode_with_report(img, quality=q)
        bits = np.cumsum([r["estimated_bits"] - 8 * symbol_check_size(FORMAT_VERSION) for r in report]) / img.shape[0] / img.shape[1]
        assert rows[str(q)]["bpp"] == pytest.approx(bits.tolist(), rel=0.03)  # the coder snaps scales to a 64-entry table
        for k in (1, 2, 3):
            shown = codec.decode(truncate_levels(data, k))
            assert rows[str(q)]["psnr"][k - 1] == pytest.approx(psnr(shown, img), abs=0.05)
    assert probe.parse_qualities("-1:2") == [-1.0, 0.0, 1.0, 2.0] and probe.parse_qualities("0.5,3") == [0.5, 3.0]


def test_latent_usage_splits_the_probe_bits_by_channel() -> None:
    """bench.latent_usage: per level, its channels' bits add up to the bits the probe counts for
    that level, and a channel whose posterior is switched off (latent gain 0, so its latents sit at
    the prior's mean) carries a smaller share than any live one."""
    import torch

    from ssvcodec.bench import latent_usage
    from ssvcodec.models.config import RDConfig
    from ssvcodec.models.rd import RDSSVAE

    torch.manual_seed(0)
    model = RDSSVAE(RDConfig(width=16, latent_channels=(4, 4, 4), emb_dim=8, context=(0, 1, 1))).eval()
    with torch.no_grad():
        model.levels[2].latent_gain.lin.bias[1] = -30.0  # channel 1 of level 3: exp(-30) ~ 0
    img = synthetic(64, 64, 2)
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None].float() / 255 - 0.5
    per_level = latent_usage.channel_bits(model, x, 4.0)
    probe_bpp = probe.measure(model, [img], [4.0])["4.0"]["bpp"]
    assert [len(b) for b in per_level] == [4, 4, 4]
    assert np.cumsum([b.sum() / (64 * 64) for b in per_level]).tolist() == pytest.approx(probe_bpp, rel=1e-4)
    live = np.delete(per_level[2], 1)
    assert per_level[2][1] < live.min()


def test_paired_log_compares_shared_batches(tmp_path: Path) -> None:
    """bench.paired_log: per window of shared steps, the probe's relative bpp change and PSNR change
    against the control; runs whose q differ at a shared step are refused."""
    from ssvcodec.bench import paired_log

    head = "step,images,seconds,lr,loss,grad_norm,skipped,kind,q,bpp_1,bpp_2,psnr_1,psnr_2\n"
    control = head + "".join(f"{s},0,0,1e-4,1,1,0,train,{q},0.1,0.1,20,30\n" for s, q in ((1, -1.0), (2, 5.0), (3, 8.0)))
    probe = head + "".join(f"{s},0,0,1e-4,1,1,0,train,{q},0.1,{b2},20,{p2}\n"
                           for s, q, b2, p2 in ((1, -1.0, 0.1, 30.5), (2, 5.0, 0.2, 30), (3, 8.0, 0.2, 29)))
    (tmp_path / "a.csv").write_text(control)
    (tmp_path / "b.csv").write_text(probe)
    a, _ = paired_log.read_log(tmp_path / "a.csv")
    b, _ = paired_log.read_log(tmp_path / "b.csv")
    rows = paired_log.summarise(a, b, paired_log.paired_rows(a, b, 0), 2)
    assert [(r["steps"], r["n"]) for r in rows] == [("1..2", 2), ("3..3", 1)]
    assert rows[0]["bpp_1"] == pytest.approx(0.0) and rows[0]["bpp_2"] == pytest.approx(25.0)  # 0.2 -> 0.2, 0.2 -> 0.3
    assert rows[0]["psnr_2"] == pytest.approx(0.25) and rows[1]["psnr_2"] == pytest.approx(-1.0)
    (tmp_path / "c.csv").write_text(probe.replace("train,5.0", "train,6.0"))
    c, _ = paired_log.read_log(tmp_path / "c.csv")
    with pytest.raises(SystemExit, match="do not share"):
        paired_log.paired_rows(a, c, 0)
