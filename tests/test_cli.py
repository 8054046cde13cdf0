"""The ``ssvcodec`` command line as a user meets it: never losing data, pipes, output formats,
input conversions, batches, target rates, exit codes and start-up cost."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssvcodec.codec.cli import EXIT_PARTIAL

from .conftest import run_cli as run
from .conftest import synthetic

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def work(tmp_path: Path, tiny_rd_weights: Path) -> tuple[Path, list[str]]:
    Image.fromarray(synthetic(40, 56)).save(tmp_path / "in.png")
    return tmp_path, ["--weights", str(tiny_rd_weights)]


def test_round_trip_levels_and_formats(work, capsys: pytest.CaptureFixture[str]) -> None:
    d, w = work
    assert run("encode", str(d / "in.png"), "-o", str(d / "a.ssv"), *w) == 0
    assert run("decode", str(d / "a.ssv"), "-o", str(d / "out.png"), "--progressive", *w) == 0
    assert all((d / f).exists() for f in ("out_L1.png", "out_L2.png", "out_L3.png", "out.png"))
    assert (d / "out_L3.png").read_bytes() == (d / "out.png").read_bytes()
    for ext, fmt in ((".jpg", "JPEG"), (".webp", "WEBP"), (".tiff", "TIFF"), (".ppm", "PPM")):
        assert run("decode", str(d / "a.ssv"), "-o", str(d / f"o{ext}"), *w) == 0
        with Image.open(d / f"o{ext}") as im:
            assert im.format == fmt and im.size == (56, 40)
    capsys.readouterr()
    assert run("decode", str(d / "a.ssv"), "-o", str(d / "o.gif"), *w) == 1
    assert ".png" in capsys.readouterr().err and not (d / "o.gif").exists()
    assert run("truncate", str(d / "a.ssv"), "--levels", "1", "-o", str(d / "t.ssv")) == 0
    assert run("info", str(d / "a.ssv")) == 0
    out = capsys.readouterr().out
    assert "format v8" in out and "chunk flags none" in out and "level 3" in out


def test_never_overwrites_without_force_nor_writes_over_the_input(work, capsys: pytest.CaptureFixture[str]) -> None:
    d, w = work
    src = d / "in.png"
    before = src.read_bytes()
    assert run("encode", str(src), "-o", str(src), "--force", *w) == 1
    os.symlink(src, d / "link.png")
    assert run("encode", str(d / "link.png"), "-o", str(src), "--force", *w) == 1
    assert "is the input" in capsys.readouterr().err and src.read_bytes() == before
    (d / "a.ssv").write_bytes(b"keep me")
    assert run("encode", str(src), "-o", str(d / "a.ssv"), *w) == 1
    assert "--force" in capsys.readouterr().err and (d / "a.ssv").read_bytes() == b"keep me"
    assert run("encode", str(src), "-o", str(d / "a.ssv"), "--force", *w) == 0
    assert (d / "a.ssv").read_bytes()[:4] == b"SSVC"
    # progressive outputs are checked before any is written
    (d / "o_L2.png").write_bytes(b"mine")
    assert run("decode", str(d / "a.ssv"), "-o", str(d / "o.png"), "--progressive", *w) == 1
    assert not (d / "o_L1.png").exists() and (d / "o_L2.png").read_bytes() == b"mine"


def test_unwritable_or_missing_folder_fails_before_any_work(work, capsys: pytest.CaptureFixture[str]) -> None:
    d, w = work
    t0 = time.perf_counter()
    assert run("encode", str(d / "in.png"), "-o", str(d / "nope" / "a.ssv"), *w) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and str(d / "nope") in err and len(err.strip().splitlines()) == 1
    assert time.perf_counter() - t0 < 5
    if os.geteuid() != 0:  # root may write anywhere
        ro = d / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        assert run("encode", str(d / "in.png"), "-o", str(ro / "a.ssv"), *w) == 1
        assert "not writable" in capsys.readouterr().err


def test_files_get_the_umask_mode(work) -> None:
    d, w = work
    old = os.umask(0o022)
    try:
        assert run("encode", str(d / "in.png"), "-o", str(d / "a.ssv"), *w) == 0
        assert run("decode", str(d / "a.ssv"), "-o", str(d / "o.png"), *w) == 0
    finally:
        os.umask(old)
    for f in ("a.ssv", "o.png"):
        assert stat.S_IMODE((d / f).stat().st_mode) == 0o644


def test_pipes(work, tiny_rd_weights: Path) -> None:
    d, w = work
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "ssvcodec.codec.cli"]
    enc = subprocess.run(cli + ["encode", "-", "-o", "-", *w], input=(d / "in.png").read_bytes(),
                         capture_output=True, env=env, check=True)
    assert enc.stdout[:4] == b"SSVC"
    dec = subprocess.run(cli + ["decode", "-", "-o", "-", *w], input=enc.stdout, capture_output=True, env=env, check=True)
    with Image.open(__import__("io").BytesIO(dec.stdout)) as im:
        assert im.format == "PNG" and im.size == (56, 40)


def test_input_conversions_are_announced(work, capsys: pytest.CaptureFixture[str]) -> None:
    d, w = work
    Image.fromarray((synthetic(16, 24)[:, :, 0].astype(np.uint16) * 257)).save(d / "g16.png")
    frames = [Image.fromarray(synthetic(16, 16, i)) for i in range(3)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(synthetic(16, 24)).save(d / "rot.jpg", exif=exif)
    assert run("encode", str(d / "g16.png"), "-o", str(d / "g.ssv"), *w) == 0
    assert "16-bit grey" in capsys.readouterr().err
    assert run("encode", str(d / "rot.jpg"), "-o", str(d / "r.ssv"), *w) == 0
    assert "EXIF orientation 6" in capsys.readouterr().err
    assert run("decode", str(d / "r.ssv"), "-o", str(d / "r.png"), *w) == 0
    assert Image.open(d / "r.png").size == (16, 24)  # upright: rotated by 90 degrees
    assert run("encode", str(d / "anim.gif"), "-o", str(d / "x.ssv"), *w) == 1
    assert "3 frames" in capsys.readouterr().err and not (d / "x.ssv").exists()


def test_batch_reports_failures_and_writes_the_rest(work, capsys: pytest.CaptureFixture[str]) -> None:
    d, w = work
    src = d / "src"
    src.mkdir()
    for i in range(3):
        Image.fromarray(synthetic(24, 32, i)).save(src / f"im{i}.png")
    (src / "broken.png").write_bytes(b"not a png")
    out = d / "out"
    out.mkdir()
    assert run("encode", str(src), "--out-dir", str(out), *w) == EXIT_PARTIAL
    assert sorted(p.name for p in out.iterdir()) == ["im0.ssv", "im1.ssv", "im2.ssv"]
    assert "broken.png" in capsys.readouterr().err
    dec = d / "dec"
    dec.mkdir()
    assert run("decode", str(out), "--out-dir", str(dec), "-j", "2", *w) == 0
    assert sorted(p.name for p in dec.iterdir()) == ["im0.png", "im1.png", "im2.png"]
    assert run("encode", str(src / "im0.png"), str(src / "im1.png"), "-o", str(d / "x.ssv"), *w) == 2


def test_help_and_version_start_without_torch() -> None:
    code = "import sys, codec.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "ssvcodec.codec.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "Exit status" in r.stdout
    assert time.perf_counter() - t0 < 3  # includes the interpreter's own start
    r = subprocess.run([sys.executable, "-m", "ssvcodec.codec.cli", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert "ssvcodec, version" in r.stdout


def test_encode_help_states_the_shipped_defaults() -> None:
    """The help text names the shipped model's quality range and the lossless streams' default q
    (written out, since the CLI's help must not import torch)."""
    import json

    from ssvcodec.codec.rd_api import DEFAULT_LOSSLESS_QUALITY
    r = subprocess.run([sys.executable, "-m", "ssvcodec.codec.cli", "encode", "--help"], capture_output=True, text=True, cwd=ROOT)
    text = " ".join(r.stdout.split())
    lo, hi = json.loads((ROOT / "weights" / "ssvae-rd.json").read_text())["config"]["quality_range"]
    assert f"[{lo:g}, {hi:g}] for the shipped ones" in text
    assert f"(default {DEFAULT_LOSSLESS_QUALITY:g}: the smallest lossless files)" in text


def test_quality_rate_and_levels_are_checked(work, capsys: pytest.CaptureFixture[str]) -> None:
    d, w = work
    assert run("encode", str(d / "in.png"), "-o", str(d / "a.ssv"), "--quality", "9", *w) == 1
    assert "[0, 8]" in capsys.readouterr().err
    assert run("encode", str(d / "in.png"), "-o", str(d / "a.ssv"), "--levels", "5", *w) == 1
    assert "1..3" in capsys.readouterr().err
    assert run("encode", str(d / "in.png"), "-o", str(d / "a.ssv"), "--quality", "3", "--bpp", "1", *w) == 2
    assert run("encode", str(d / "in.png"), "-o", str(d / "a.ssv"), "--size", "400", *w) == 0
    assert "tries" in capsys.readouterr().err


def test_pillow_opens_ssv_files(work) -> None:
    import ssvcodec.pillow
    from ssvcodec.codec import pillow as plugin

    d, w = work
    assert run("encode", str(d / "in.png"), "-o", str(d / "a.ssv"), *w) == 0
    assert run("decode", str(d / "a.ssv"), "-o", str(d / "a.png"), *w) == 0
    plugin.weights = w[1]
    try:
        with Image.open(d / "a.ssv") as im:
            assert im.format == "SSV" and im.size == (56, 40) and im.info["ssv_levels"] == 3
            assert np.array_equal(np.asarray(im), np.asarray(Image.open(d / "a.png")))
    finally:
        plugin.weights = None
