"""The ssvcodec benchmark plugin (bench.learned), bench.cifar's lossless arithmetic and bench.speed,
with a tiny random model: mechanics only (byte counts equal to the codec's files, curve names and
order, the derived envelope, the rd plugin hooks)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssvcodec.bench import cifar, learned, rd, speed
from ssvcodec.bench import codecs as bc
from ssvcodec.codec.rd_api import RDCodec
from ssvcodec.codec.bitstream import truncate_levels
from ssvcodec.codec.cli import main as cli_main

from .conftest import require_data, synthetic


@pytest.fixture()
def plugin(tiny_weights: Path, tiny_rd_weights: Path, tiny_head_weights: Path):
    learned.set_weights(tiny_rd_weights, tiny_weights, tiny_head_weights)
    yield learned
    learned.set_weights(None)


def test_registered_and_unavailable_without_weights(tmp_path: Path) -> None:
    assert set(learned.LEARNED_CODECS) <= set(bc.REGISTRY)
    learned.set_weights(tmp_path / "missing.safetensors")
    try:
        assert "not found" in bc.REGISTRY["ssvcodec"].unavailable_reason()
        with pytest.raises(bc.CodecUnavailable):
            bc.get_codec("ssvcodec")
    finally:
        learned.set_weights(None)


@pytest.mark.parametrize("name,with_y", [("ssvcodec", False), ("ssvcodec+y", True)])
def test_per_level_bytes_are_the_codecs_files(plugin, tiny_rd_weights: Path, tiny_head_weights: Path, name: str,
                                              with_y: bool) -> None:
    img = synthetic(32, 48, 1)
    c = bc.get_codec(name)
    api = RDCodec(tiny_rd_weights, lossless_weights=tiny_head_weights)
    data = c.encode(img, 2)
    kw = {"with_y": True} if with_y else {}
    assert data == api.encode(img, quality=2, **kw)                              # deterministic, same call
    pts = c.operating_points(data, 2)
    labels = ["L1", "L2", "L3"] if not with_y else ["CR3"]
    assert [p.curve for p in pts] == [f"{name}/{lb}" for lb in labels]
    assert all(p.key == "q=2" for p in pts)
    used = {s.level: s.bytes_used for s in api.decode_progressive(data)}
    for p in pts:
        lv = p.extra["level"]
        assert p.n_bytes == used[lv] == len(truncate_levels(data, lv))
        if not with_y:
            assert p.n_bytes == len(api.encode(img, levels=lv, quality=2))
        assert np.array_equal(p.decode(), api.decode(data, levels=lv))
        assert p.extra["quality"] == 2.0 and p.extra["with_y"] is with_y
    assert pts[-1].n_bytes == len(data)
    assert [p.n_bytes for p in pts] == sorted(p.n_bytes for p in pts)


def test_lossless_point_is_bit_exact_whole_file(plugin) -> None:
    img = synthetic(24, 40, 2)
    c = bc.get_codec("ssvcodec-lossless")
    assert c.lossless
    data = c.encode(img, 4)
    (p,) = c.operating_points(data, 4)
    assert p.curve == "ssvcodec-lossless" and p.n_bytes == len(data)
    assert np.array_equal(p.decode(), img)
    assert 0 < p.extra["payload_bytes"] < len(data)


def test_bytes_equal_the_cli_files(plugin, tiny_rd_weights: Path, tmp_path: Path) -> None:
    img = synthetic(32, 48, 3)
    src = tmp_path / "img.png"
    Image.fromarray(img).save(src)
    c = bc.get_codec("ssvcodec")
    pts = c.operating_points(c.encode(img, 8), 8)
    full = tmp_path / "s.ssv"
    for args in (["encode", str(src), "-o", str(full), "--quality", "8", "--weights", str(tiny_rd_weights)],
                 ["truncate", str(full), "--levels", "2", "-o", str(tmp_path / "s2.ssv")]):
        with pytest.raises(SystemExit) as e:
            cli_main(args)
        assert e.value.code == 0
    assert full.stat().st_size == pts[-1].n_bytes
    assert (tmp_path / "s2.ssv").stat().st_size == pts[1].n_bytes
    assert "--quality 8" in pts[-1].extra["cli"] and "--levels 2" in pts[1].extra["cli"]


def test_pareto_best_is_the_upper_envelope() -> None:
    def pt(key: str, b: float, p: float) -> dict:
        return {"key": key, "bpp": b, "psnr": p, "n_images": 2}

    curves = {
        "ssvcodec/RS1": {"codec": "ssvcodec", "lossless": False, "points": [pt("q=1", 0.1, 20), pt("q=4", 0.2, 22)]},
        "ssvcodec/RS2": {"codec": "ssvcodec", "lossless": False, "points": [pt("q=1", 0.15, 19), pt("q=4", 0.3, 25)]},
        "ssvcodec+y/CR2": {"codec": "ssvcodec+y", "lossless": False, "points": [pt("q=1", 0.5, 24.5)]},
        "jpeg": {"codec": "jpeg", "lossless": False, "points": [pt("q=5", 0.05, 40)]},
    }
    best = learned.pareto_best(curves)[learned.BEST]
    assert [p["key"] for p in best["points"]] == ["RS1@q=1", "RS1@q=4", "RS2@q=4"]
    assert [p["source"] for p in best["points"]] == ["ssvcodec/RS1", "ssvcodec/RS1", "ssvcodec/RS2"]


def test_rd_run_with_plugin_end_to_end(plugin, tiny_weights: Path, tiny_rd_weights: Path, tiny_head_weights: Path,
                                       tmp_path: Path) -> None:
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    for i, (h, w) in enumerate(((24, 40), (32, 32))):
        Image.fromarray(synthetic(h, w, 10 + i)).save(img_dir / f"im{i}.png")
    out = tmp_path / "res" / "rd"
    learned.set_weights(None)                      # the --weights option added by the plugin sets it
    rc = rd.main([str(img_dir), "--plugin", "bench.learned", "--weights", str(tiny_rd_weights),
                  "--elbo-weights", str(tiny_weights), "--lossless-weights", str(tiny_head_weights), "--out", str(out),
                  "--codecs", "ssvcodec,ssvcodec+y,ssvcodec-lossless,png", "--sweep", "ssvcodec=2,8",
                  "--sweep", "ssvcodec+y=4", "--repeats", "0", "--no-plots", "--no-progress"])
    assert rc == 0
    res = json.loads(out.with_suffix(".json").read_text())
    curves = res["curves"]
    assert [n for n in curves if n.startswith("ssvcodec")] == [
        "ssvcodec/L1", "ssvcodec/L2", "ssvcodec/L3", "ssvcodec+y/CR3", "ssvcodec-lossless",
        "ssvcodec/best"]
    assert [p["key"] for p in curves["ssvcodec/L3"]["points"]] in (["q=2", "q=8"], ["q=8", "q=2"])
    best = curves["ssvcodec/best"]["points"]
    assert all(a["bpp"] <= b["bpp"] and a["psnr"] < b["psnr"] for a, b in zip(best, best[1:]))
    assert curves["ssvcodec-lossless"]["lossless"] and curves["ssvcodec-lossless"]["points"][0]["exact"]
    rows = [r for r in res["rows"] if r["codec"] == "ssvcodec"]
    assert len(rows) == 2 * 2 * 3 and all("cli" in r and "level" in r for r in rows)
    assert res["meta"]["plugins"]["bench.learned"]["weights"]["path"] == str(tiny_rd_weights.resolve())
    assert "ssvcodec/best" in out.with_suffix(".md").read_text()

    # The command-line tool writes files of exactly the sizes in the JSON (bench.check_cli).
    from ssvcodec.bench import check_cli

    assert check_cli.main([str(out.with_suffix(".json")), "--images", "im0.png"]) == 0
    res["rows"][0]["n_bytes"] += 1
    assert len(check_cli.check(res, {res["rows"][0]["image"]})) == 1


def test_cifar_lossless_bits_per_dim_arithmetic(plugin) -> None:
    imgs = np.stack([synthetic(32, 32, 20).transpose(2, 0, 1), synthetic(32, 32, 21).transpose(2, 0, 1)])
    res = cifar.run(images=imgs, codecs=["png", "ssvcodec-lossless"], repeats=0, k=2, batch=2, progress=False)
    table = {e["curve"]: e for e in res["lossless_bpd"]}
    for name in ("png", "ssvcodec-lossless"):
        rows = [r for r in res["rows"] if r["curve"] == name]
        assert len(rows) == 2 and all(r["exact"] for r in rows)
        expect = np.mean([8 * r["n_bytes"] / (3 * 32 * 32) for r in rows])
        assert table[name]["bpd"] == pytest.approx(expect, rel=1e-12)
        assert table[name]["bpd"] == pytest.approx(np.mean([r["bpp"] for r in rows]) / 3, rel=1e-12)
    assert table["ssvcodec-lossless"]["payload_bpd"] < table["ssvcodec-lossless"]["bpd"]
    assert cifar.bits_per_dim(3072, 32, 32) == 8.0
    assert math.isfinite(res["nll"]["elbo_bpd"]) and res["nll"]["k"] == 2
    md = cifar.lossless_markdown(res["lossless_bpd"], res["nll"], 2)
    assert "IWAE-2" in md and "ssvcodec-lossless" in md


def test_cifar_subset_matches_models_evaluate() -> None:
    require_data("cifar10")
    from ssvcodec.models.data import load_cifar
    from ssvcodec.models.evaluate import cifar_subset

    test = load_cifar("test")
    idx = cifar.subset_indices(len(test), 5, 1234)
    assert np.array_equal(test[idx], cifar_subset(5, seed=1234))


def test_speed_on_one_small_image(plugin, tmp_path: Path) -> None:
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    Image.fromarray(synthetic(32, 48, 30)).save(img_dir / "a.png")
    out = tmp_path / "speed"
    assert speed.main([str(img_dir), "--repeats", "1", "--codecs", "jpeg,jpeg2000", "--out", str(out),
                       "--no-progress", "--weights", str(plugin.weights_path())]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    row = res["rows"][0]
    assert [lv["label"] for lv in row["ssvcodec"]["levels"]] == ["L1", "L2", "L3"]
    assert row["ssvcodec"]["levels"][-1]["bytes_used"] == row["ssvcodec"]["bytes"]
    assert set(row["classical"]) == {"jpeg", "jpeg2000"}
    assert list(row["gmac_per_mp"])[:3] == ["decode to level 1", "decode to level 2", "decode to level 3"]
    assert res["meta"]["machine"]["cores"] and "CompressAI" in out.with_suffix(".md").read_text()


def test_comparable_setting_picks_the_nearest_rate() -> None:
    img = synthetic(64, 64, 40)
    c = bc.get_codec("jpeg")
    rates = {q: 8 * len(c.encode(img, q)) / (64 * 64) for q in c.qualities}
    target = rates[50] * 1.01
    q, data = speed.comparable_setting(c, img, target)
    assert q == min(rates, key=lambda k: abs(rates[k] - target)) and data == c.encode(img, q)


def test_render_limits_runs_on_a_model_with_a_checkerboard_context(capsys: pytest.CaptureFixture[str]) -> None:
    """bench.render_limits' quantizers follow the Quantizer protocol (the context's second call)."""
    import torch

    from ssvcodec.bench import render_limits
    from ssvcodec.models.rd import RDSSVAE

    from .conftest import tiny_rd_config

    torch.manual_seed(0)
    model = RDSSVAE(tiny_rd_config(context=(0, 1, 1))).eval()
    x = torch.from_numpy(synthetic(64, 64).transpose(2, 0, 1).copy())[None].float() / 255 - 0.5
    render_limits.head_ceiling(model, x, steps=2)
    render_limits.latent_gap(model, x, steps=2)
    out = capsys.readouterr().out
    assert "2. head alone" in out and "3. latents" in out
    m = re.search(r"3\. latents, q = 8: ([\d.]+) dB at ([\d.]+) bpp from the encoder", out)
    assert m and float(m.group(2)) > 0


def test_cli_rd_sweeps_the_command_line(tmp_path: Path, tiny_rd_weights: Path) -> None:
    from ssvcodec.bench import cli_rd

    src = tmp_path / "photo.png"
    Image.fromarray(synthetic(32, 48, 3)).save(src)
    cli_rd.main([str(src), "--bpp", "1,4", "--weights", str(tiny_rd_weights), "--threads", "1",
                 "--out", str(tmp_path / "sweep")])
    res = json.loads((tmp_path / "sweep.json").read_text())
    (photo,) = res["photos"]
    assert [p["target_bpp"] for p in photo["points"]] == [1.0, 4.0]
    for p in photo["points"]:
        sizes = [lv["bytes"] for lv in p["levels"]]
        assert [lv["level"] for lv in p["levels"]] == [1, 2, 3]
        assert sizes == sorted(set(sizes))                      # each truncation holds less
        assert sizes[-1] == round(p["file_bpp"] * 32 * 48 / 8)  # the last level is the whole file
        assert all(math.isfinite(lv["psnr"]) for lv in p["levels"])
    assert set(photo["anchors"]) == set(cli_rd.ANCHORS)
    assert set(res["bd_rate_mean"]) == {"L1", "L2", "L3"}
    assert "| photo.png |" in (tmp_path / "sweep.md").read_text()
