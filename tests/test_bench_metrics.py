"""Tests of bench.metrics, bench.bdrate, bench.codecs and the bench.rd pipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ssvcodec.bench import codecs as bc
from ssvcodec.bench.bdrate import bd_psnr, bd_rate, quality_at_rate
from ssvcodec.bench.metrics import bpp, ms_ssim, ms_ssim_scales, mse, psnr

PSNR_MSE1 = 20 * math.log10(255)  # 48.1308036086791


def smooth_image(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A compressible synthetic RGB image: gradients, a disc and mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 9.0) * np.cos(y / 13.0)
    g = 255 * x / w
    b = 255 * ((x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(h, w) / 3) ** 2)
    img = np.stack([r, g, b], -1) + rng.normal(0, 4, (h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --- metrics -------------------------------------------------------------
def test_psnr_one_off_every_subpixel():
    a = smooth_image()
    b = a.astype(np.int16)
    b = np.where(b < 255, b + 1, b - 1).astype(np.uint8)  # |diff| = 1 everywhere
    assert mse(a, b) == 1.0
    assert psnr(a, b) == pytest.approx(PSNR_MSE1, abs=1e-12)
    assert psnr(a, b) == pytest.approx(48.1308036086791, abs=1e-9)


def test_psnr_hand_computed_and_identical():
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 12  # MSE = 144 / 12 = 12
    assert mse(a, b) == 12.0
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 12))
    assert psnr(a, a) == math.inf


def test_metrics_reject_bad_input():
    a = smooth_image()
    with pytest.raises(TypeError):
        psnr(a.astype(np.float32), a)
    with pytest.raises(ValueError):
        psnr(a, a[:-1])


def test_bpp():
    assert bpp(49152, 512, 768) == 1.0
    assert bpp(1, 1, 8) == 1.0
    assert bpp(12288, 512, 768) == 0.25


def test_ms_ssim_identical_and_ordering():
    pytest.importorskip("pytorch_msssim")
    a = smooth_image(192, 192)  # 5 scales
    assert ms_ssim_scales(192, 192) == 5
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, a.shape)
    small = np.clip(a + 3 * noise, 0, 255).astype(np.uint8)
    large = np.clip(a + 20 * noise, 0, 255).astype(np.uint8)
    s_small, s_large = ms_ssim(a, small), ms_ssim(a, large)
    assert 1.0 > s_small > s_large > 0.0


def test_ms_ssim_small_image_fallback():
    pytest.importorskip("pytorch_msssim")
    a = smooth_image(64, 80)
    assert ms_ssim_scales(64, 80) == 3  # 64 > 10 * 2**2
    assert ms_ssim_scales(8, 8) == 0
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < ms_ssim(a, b) < 1.0
    assert ms_ssim(a[:8, :8], a[:8, :8]) == pytest.approx(1.0, abs=1e-6)


# --- BD-rate -------------------------------------------------------------
ANCHOR_R = [0.25, 0.5, 0.75, 1.0, 1.5]
ANCHOR_P = [28.0, 31.0, 33.0, 34.5, 36.5]


def test_bd_rate_scaled_rates_is_minus_ten_percent():
    test_r = [0.9 * r for r in ANCHOR_R]
    assert bd_rate(ANCHOR_R, ANCHOR_P, test_r, ANCHOR_P) == pytest.approx(-10.0, abs=1e-6)
    # and the anchor is +11.1 % vs the test
    assert bd_rate(test_r, ANCHOR_P, ANCHOR_R, ANCHOR_P) == pytest.approx(100 / 9, abs=1e-6)


def test_bd_identical_curves_are_zero():
    assert bd_rate(ANCHOR_R, ANCHOR_P, ANCHOR_R, ANCHOR_P) == pytest.approx(0.0, abs=1e-12)
    assert bd_psnr(ANCHOR_R, ANCHOR_P, ANCHOR_R, ANCHOR_P) == pytest.approx(0.0, abs=1e-12)


def test_bd_psnr_equals_shift():
    shifted = [p + 0.7 for p in ANCHOR_P]
    assert bd_psnr(ANCHOR_R, ANCHOR_P, ANCHOR_R, shifted) == pytest.approx(0.7, abs=1e-9)
    assert bd_psnr(ANCHOR_R, ANCHOR_P, ANCHOR_R, [p - 1.25 for p in ANCHOR_P]) == pytest.approx(-1.25, abs=1e-9)
    # unsorted input gives the same answer
    order = [3, 0, 4, 1, 2]
    r = [ANCHOR_R[i] for i in order]
    p = [shifted[i] for i in order]
    assert bd_psnr(ANCHOR_R, ANCHOR_P, r, p) == pytest.approx(0.7, abs=1e-9)


def test_bd_no_overlap_is_nan():
    far = [p + 20 for p in ANCHOR_P]
    assert math.isnan(bd_rate(ANCHOR_R, ANCHOR_P, ANCHOR_R, far))
    assert math.isnan(bd_psnr(ANCHOR_R, ANCHOR_P, [r * 100 for r in ANCHOR_R], ANCHOR_P))
    assert math.isnan(bd_rate(ANCHOR_R, ANCHOR_P, [1.0], [30.0]))


def test_bd_rate_partial_overlap_uses_overlap_only():
    # PSNR linear in log(rate): PCHIP reproduces it exactly on any subset, so a
    # test curve = anchor x 0.8 measured only on the upper part gives -20 %.
    r = [0.125, 0.25, 0.5, 1.0, 2.0]
    p = [26.0, 29.0, 32.0, 35.0, 38.0]
    test_r = [0.8 * x for x in r[2:]]
    assert bd_rate(r, p, test_r, p[2:]) == pytest.approx(-20.0, abs=1e-6)
    assert bd_psnr(r, p, r[2:], [x + 0.3 for x in p[2:]]) == pytest.approx(0.3, abs=1e-9)


def test_quality_at_rate():
    r = [0.25, 0.5, 1.0, 2.0]
    p = [30.0, 32.0, 34.0, 36.0]  # linear in log2(rate): 2 dB per doubling
    assert quality_at_rate(r, p, 0.5) == pytest.approx(32.0)
    assert quality_at_rate(r, p, 0.25) == pytest.approx(30.0)
    assert quality_at_rate(r, p, 2 ** -1.5) == pytest.approx(31.0)  # PCHIP exact on straight lines
    assert quality_at_rate(r, p, math.sqrt(0.5)) == pytest.approx(33.0)
    vals = quality_at_rate(r, p, (0.1, 0.25, 0.75, 4.0))
    assert math.isnan(vals[0]) and math.isnan(vals[3])
    assert vals[1] == pytest.approx(30.0)
    assert vals[2] == pytest.approx(32.0 + 2 * math.log2(1.5))


# --- codecs --------------------------------------------------------------
# the classical anchors of bench/codecs.py; plug-in codecs (bench.learned) have their own tests
AVAILABLE = [n for n, reason in bc.available_codecs().items()
             if reason is None and bc.REGISTRY[n].__module__ == "ssvcodec.bench.codecs"]


def test_registry():
    assert {"jpeg", "webp", "jpeg2000", "jpeg2000-layers", "avif", "jpegxl", "png"} <= set(bc.REGISTRY)
    with pytest.raises(KeyError):
        bc.get_codec("no-such-codec")


@pytest.mark.parametrize("name", AVAILABLE)
def test_codec_round_trip(name):
    img = smooth_image()
    codec = bc.get_codec(name, threads=1)
    q = codec.qualities[len(codec.qualities) // 2]
    data = codec.encode(img, q)
    assert isinstance(data, bytes) and len(data) > 0
    points = codec.operating_points(data, q)
    assert points
    quality = []
    for pt in points:
        rec = pt.decode()
        assert rec.shape == img.shape and rec.dtype == np.uint8
        assert 0 < pt.n_bytes <= len(data)
        if codec.lossless:
            np.testing.assert_array_equal(rec, img)
        quality.append(psnr(img, rec))
    if not codec.lossless:
        assert quality[-1] > 20.0  # progressive: the last (largest) point
    rec = codec.decode(data)
    assert rec.shape == img.shape
    if codec.lossless:
        np.testing.assert_array_equal(rec, img)


@pytest.mark.skipif("jpeg2000-layers" not in AVAILABLE, reason="no OpenJPEG in Pillow")
def test_jpeg2000_layers_are_progressive():
    img = smooth_image(128, 160)
    codec = bc.get_codec("jpeg2000-layers")
    rates = (0.25, 0.5, 1.0, 2.0)
    data = codec.encode_layers(img, rates)
    assert codec.num_layers(data) == 4
    points = codec.operating_points(data, rates)
    sizes = [p.n_bytes for p in points]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert sizes == [codec.layer_nbytes(data, k) for k in range(1, 5)]
    quality = [psnr(img, p.decode()) for p in points]
    assert quality == sorted(quality)
    # each prefix is a prefix of the full PLT-less stream (plus EOC)
    full = bc.truncate_j2k(data, 4)
    for k in (1, 2, 3):
        part = bc.truncate_j2k(data, k)
        assert part[-2:] == b"\xff\xd9"
        sot = bc.parse_j2k_layers(data).sot
        assert full[: sot + 6] == part[: sot + 6] and full[sot + 10 : len(part) - 2] == part[sot + 10 : -2]
    # the full stream is what an encoder without PLT writes
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG2000", no_jp2=True, irreversible=True, mct=1,
                              progression="LRCP", quality_mode="rates", quality_layers=[24 / r for r in rates])
    assert full == buf.getvalue()


# --- pipeline ------------------------------------------------------------
def test_rd_main_smoke(tmp_path):
    pytest.importorskip("pytorch_msssim")
    from PIL import Image

    from ssvcodec.bench import rd

    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(64, 96, seed=i)).save(img_dir / f"im{i}.png")
    codecs = [c for c in ("jpeg", "jpeg2000", "png") if c in AVAILABLE]
    out = tmp_path / "res" / "smoke"
    rc = rd.main([str(img_dir), "--out", str(out), "--codecs", ",".join(codecs), "--repeats", "1",
                  "--threads", "1", "--sweep", "jpeg=20,50,80", "--sweep", "jpeg2000=0.5,1,2",
                  "--no-plots", "--no-progress"])
    assert rc == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["meta"]["n_images"] == 2
    assert len(res["curves"]["jpeg"]["points"]) == 3
    assert all(p["n_images"] == 2 for p in res["curves"]["jpeg"]["points"])
    assert "jpeg2000" in res["bd_rate"]["jpeg"]
    assert out.with_suffix(".md").read_text().startswith("# Rate-quality benchmark")


def test_rd_resume_reuses_logged_settings(tmp_path, monkeypatch):
    from PIL import Image

    from ssvcodec.bench import rd

    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(48, 64, seed=i)).save(img_dir / f"im{i}.png")
    out = tmp_path / "res" / "resume"
    args = [str(img_dir), "--out", str(out), "--codecs", "jpeg,png", "--sweep", "jpeg=30,70",
            "--repeats", "0", "--repeats-for", "png=1", "--threads", "1", "--no-plots", "--no-progress"]
    assert rd.main(args) == 0
    first = json.loads(out.with_suffix(".json").read_text())
    log_lines = out.with_name("resume.rows.jsonl").read_text().splitlines()
    assert len(log_lines) == 2 * 3  # 2 images x (2 jpeg qualities + 1 png)
    assert first["meta"]["repeats_for"] == {"png": 1}

    # Drop the last logged setting (as if the run had been killed there): only it is measured again.
    out.with_name("resume.rows.jsonl").write_text("\n".join(log_lines[:-1]) + "\n{\"torn")
    calls = []
    real = rd.measure
    monkeypatch.setattr(rd, "measure", lambda c, name, *a: calls.append((c.name, name)) or real(c, name, *a))
    assert rd.main(args + ["--resume"]) == 0
    assert calls == [("png", "im1.png")]
    second = json.loads(out.with_suffix(".json").read_text())
    for key in ("jpeg", "png"):
        a, b = first["curves"][key]["points"], second["curves"][key]["points"]
        assert [p["bpp"] for p in a] == [p["bpp"] for p in b]
    assert [p["psnr"] for p in first["curves"]["jpeg"]["points"]] == [p["psnr"] for p in second["curves"]["jpeg"]["points"]]
    resumed_png = [r for r in rd.read_row_log(out.with_name("resume.rows.jsonl")).values() if r[0]["codec"] == "png"]
    assert resumed_png and all(r[0]["exact"] and r[0]["psnr"] == float("inf") for r in resumed_png)


    # --reuse: png's rows come from that run, and the report says where they were measured.
    calls.clear()
    again = tmp_path / "res" / "again"
    fake = {**second["meta"], "date": "2001-01-01T00:00:00", "machine": {**second["meta"]["machine"], "cpu": "OldCPU"}}
    out.with_suffix(".json").write_text(json.dumps({**second, "meta": fake}))
    assert rd.main(args[:2] + [str(again)] + args[3:] + ["--reuse", str(out.with_suffix(".json")),
                                                         "--remeasure", "jpeg"]) == 0
    assert sorted(calls) == sorted([("jpeg", f"im{i}.png") for i in range(2) for _ in range(2)])
    third = json.loads(again.with_suffix(".json").read_text())
    assert third["meta"]["reused"] == {"png": {"date": "2001-01-01T00:00:00", "cpu": f"OldCPU, {fake['machine']['cores']} cores"}}
    assert "Rows of png taken from the run of 2001-01-01T00:00:00 (OldCPU" in again.with_suffix(".md").read_text()


def test_residual_probe_side_information_and_causality() -> None:
    """bench.residual_probe: a perfect x_hat leaves almost nothing to code, a useless one costs
    no more than coding without it (plus its coefficients), and `shifted` reads only the past."""
    from ssvcodec.bench.residual_probe import code_length, shifted

    a = np.arange(12.0).reshape(3, 4)
    assert shifted(a, 0, 1)[1, 2] == a[1, 1] and shifted(a, 1, 0)[1, 2] == a[0, 2] and shifted(a, 1, 0)[0, 0] == 0
    x = smooth_image(48, 64)
    pixels = 48 * 64
    alone = code_length(x, None) / pixels
    assert code_length(x, x) / pixels < 0.25 * alone
    noise = np.random.default_rng(1).integers(0, 256, x.shape).astype(np.uint8)
    assert code_length(x, noise) / pixels < alone + 1.0


def test_the_rd_bench_reads_jpeg_photos_as_their_decoded_pixels(tmp_path: Path) -> None:
    """bench.rd's images may be JPEGs (BSDS500 val): sorted by name, decoded to RGB, others skipped."""
    from PIL import Image

    from ssvcodec.bench.rd import load_images

    rng = np.random.default_rng(0)
    for name in ("b.jpg", "a.png"):
        Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_images(tmp_path)
    assert [n for n, _ in images] == ["a.png", "b.jpg"]
    with Image.open(tmp_path / "b.jpg") as im:
        assert np.array_equal(images[1][1], np.asarray(im.convert("RGB")))
    assert [n for n, _ in load_images(tmp_path, limit=1)] == ["a.png"]


def _cli_photo(name: str, scale: float, shift: float) -> dict:
    """A photo's result as bench.cli_rd records it: three levels, WebP / JPEG / JPEG XL sweeps."""
    webp = [(r, 20.0 + shift + 5.0 * math.log2(r / 0.1)) for r in (0.1, 0.2, 0.4, 0.8, 1.6)]
    anchors = {"webp": webp, "jpeg": [(r * 2.0, p) for r, p in webp], "jpegxl": [(r * 1.25, p) for r, p in webp]}
    points = []
    for t in (0.2, 0.4, 0.8):
        p3 = 20.0 + shift + 5.0 * math.log2(t / scale / 0.1)
        points.append({"target_bpp": t, "file_bpp": t, "encode_s": 1.0, "progressive_decode_s": 0.5,
                       "levels": [{"level": 1, "bytes": 10, "bpp": t / 8, "psnr": p3 - 9.0},
                                  {"level": 2, "bytes": 20, "bpp": t / 3, "psnr": p3 - 4.0},
                                  {"level": 3, "bytes": 30, "bpp": t, "psnr": p3}]})
    return {"image": name, "size": "8x8", "points": points, "anchors": anchors}


def test_cli_rd_bd_rates_on_known_curves() -> None:
    from ssvcodec.bench.cli_rd import comparisons, to_markdown

    # the full stream needs 0.8x WebP's bits at every PSNR on both photos: -20 % against WebP, -60 %
    # against JPEG (which needs 2x WebP's bits), -36 % against JPEG XL (1.25x)
    results = [_cli_photo("a.png", 0.8, 0.0), _cli_photo("b.png", 0.8, 3.0)]
    comp = comparisons(results)
    assert comp["bd_rate_mean"]["L3"]["webp"] == pytest.approx(-20.0, abs=1e-6)
    assert comp["bd_rate_mean"]["L3"]["jpeg"] == pytest.approx(-60.0, abs=1e-6)
    assert comp["bd_rate_mean"]["L3"]["jpegxl"] == pytest.approx(-36.0, abs=1e-6)
    assert comp["bd_rate_per_image"]["L3"]["webp"]["b.png"] == pytest.approx(-20.0, abs=1e-6)
    assert comp["mean_curves"]["L3"]["psnr"][0] == pytest.approx(np.mean([results[0]["points"][0]["levels"][2]["psnr"],
                                                                           results[1]["points"][0]["levels"][2]["psnr"]]))
    md = to_markdown(results, comp, [0.2, 0.4, 0.8])
    assert "| L3 | -60.0 % | -20.0 % | -36.0 % |" in md
    assert "| b.png | -60.0 % | -20.0 % | -36.0 % |" in md


def test_rd_hours_table_and_plot_take_rows_with_different_level_counts(tmp_path: Path) -> None:
    """A three-level row beside a four-level one: the table shows "–" for the level the old row
    lacks and for rates a curve does not reach, and the plot is drawn."""
    from ssvcodec.bench.rd_hours import markdown, plot

    def row(label: str, hours: float, levels: dict[str, float]) -> dict:
        return {"label": label, "core_hours": hours, "steps": 1, "images_seen": 8,
                "psnr_at_bpp": {L: {"0.25": v, "0.5": v + 2, "1.0": None} for L, v in levels.items()}}

    rows = [row("old", 1.0, {"L2": 25.0, "L3": 28.0}), row("new", 2.0, {"L2": 25.5, "L3": 28.5, "L4": 29.0})]
    table = markdown(rows)
    assert "| L4 @0.25 | L4 @0.5 | L4 @1.0 |" in table
    assert "| old | 1.00 | 1 | 8 | 25.00 | 27.00 | – | 28.00 | 30.00 | – | – | – | – |" in table
    assert "| new | 2.00 | 1 | 8 | 25.50 | 27.50 | – | 28.50 | 30.50 | – | 29.00 | 31.00 | – |" in table
    plot(rows, tmp_path / "hours.png")
    assert (tmp_path / "hours.png").stat().st_size > 0
