"""The codec (codec/): round trips, progressive levels, lossless, determinism across threads and
processes, robustness to corrupted input (fuzzed), honest accounting, and the CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssvcodec.bench.metrics import psnr
from ssvcodec.codec.api import Codec, to_rgb8
from ssvcodec.codec.progressive import DesyncError
from ssvcodec.codec.bitstream import BitstreamError, read_stream, truncate_levels, write_stream, Chunk
from ssvcodec.models.io import DEFAULT_WEIGHTS, save_weights
from ssvcodec.models.ssvae import build_model

from .conftest import require_data, run_cli, synthetic, tiny_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny(tiny_weights: Path) -> Codec:
    return Codec(tiny_weights)


@pytest.fixture(scope="session")
def shipped() -> Codec:
    if not DEFAULT_WEIGHTS.exists():
        pytest.skip(f"shipped weights {DEFAULT_WEIGHTS} are absent")
    return Codec()


def kodak_crop(name: str, box: tuple[int, int, int, int]) -> np.ndarray:
    path = require_data("kodak", f"{name}.png")
    return np.asarray(Image.open(path).convert("RGB").crop(box))


# ----- mechanics with a tiny model ------------------------------------------------------------
@pytest.mark.parametrize("size", [(32, 48), (37, 53), (5, 7)])
def test_every_level_decodes_at_any_size(tiny: Codec, size: tuple[int, int]) -> None:
    img = synthetic(*size)
    data = tiny.encode(img, quality=4, with_y=True, lossless=True)
    steps = list(tiny.decode_progressive(data))
    assert [s.level for s in steps] == [1, 2, 3, 4]
    assert [s.label for s in steps] == ["RS1", "CR2", "CR3", "lossless"]
    assert all(s.image.shape == img.shape for s in steps)
    assert np.array_equal(steps[-1].image, img)                       # lossless is bit-exact
    assert steps[-1].bytes_used == len(data)
    assert [s.bytes_used for s in steps] == sorted(s.bytes_used for s in steps)


def test_levels_option_and_truncation_equal_the_decode_of_that_level(tiny: Codec) -> None:
    img = synthetic(32, 48, 1)
    data = tiny.encode(img, quality=2)
    for lv in (1, 2, 3):
        part = truncate_levels(data, lv)
        assert np.array_equal(tiny.decode(part), tiny.decode(data, levels=lv))
        assert np.array_equal(tiny.decode(tiny.encode(img, levels=lv, quality=2)), tiny.decode(data, levels=lv))
    with pytest.raises(ValueError, match="not in this stream"):
        tiny.decode(truncate_levels(data, 1), levels=2)


def test_truncated_file_decodes_its_whole_levels(tiny: Codec) -> None:
    img = synthetic(32, 48, 2)
    data = tiny.encode(img, quality=2)
    cut = data[: len(truncate_levels(data, 2)) + 10]
    assert read_stream(cut).truncated
    assert np.array_equal(tiny.decode(cut), tiny.decode(data, levels=2))


def test_grey_rgba_and_16_bit_inputs_are_converted_with_a_notice(tiny: Codec) -> None:
    grey = synthetic(20, 30)[:, :, 0]
    r = to_rgb8(grey)
    assert r.channels == 1 and any("grey" in n for n in r.notices)
    out = tiny.decode(tiny.encode(grey, lossless=True))
    assert out.shape == grey.shape and np.array_equal(out, grey)
    rgba = np.dstack([synthetic(20, 30), np.full((20, 30), 7, np.uint8)])
    assert any("alpha" in n for n in to_rgb8(rgba).notices)
    assert tiny.decode(tiny.encode(rgba, levels=1)).shape == (20, 30, 3)
    deep = (synthetic(20, 30).astype(np.uint16) * 257)
    r16 = to_rgb8(deep)
    assert any("16-bit" in n for n in r16.notices) and np.array_equal(r16.pixels, synthetic(20, 30))
    with pytest.raises(ValueError):
        to_rgb8(np.zeros((4, 4, 2), np.uint8))


def test_tiled_encoding_round_trips(tiny: Codec) -> None:
    img = synthetic(40, 70, 3)
    data = tiny.encode(img, tile=32, lossless=True)
    hd = read_stream(data).header
    assert hd.tile_grid == (2, 3)
    assert np.array_equal(tiny.decode(data), img)


def test_other_weights_are_refused(tiny: Codec, tmp_path: Path) -> None:
    torch.manual_seed(1)
    other = build_model(tiny_config(2, latent_stride=8))
    save_weights(other, tmp_path / "other.safetensors")
    data = Codec(tmp_path / "other.safetensors").encode(synthetic(16, 16), levels=1)
    with pytest.raises(BitstreamError, match="weights"):
        tiny.decode(data)


def test_fuzzed_streams_never_crash_or_hang(tiny: Codec) -> None:
    """1,000 mutated streams: each decodes or raises a clear error (BitstreamError/ValueError).
    Half keep valid CRCs (payload bytes mutated and re-wrapped), so they reach the entropy
    decoder and the desynchronisation checks."""
    img = synthetic(16, 16, 4)
    data = tiny.encode(img, with_y=True, lossless=True)
    parsed = read_stream(data)
    rng = np.random.default_rng(0)
    outcomes = {"ok": 0, "error": 0, "desync": 0}
    for i in range(1000):
        if i % 2:
            buf = bytearray(data)
            for _ in range(rng.integers(1, 4)):
                buf[rng.integers(len(buf))] ^= 1 << int(rng.integers(8))
            mutated = bytes(buf[: rng.integers(len(buf) + 1)] if rng.random() < 0.3 else buf)
        else:
            chunks = []
            for c in parsed.chunks:
                p = bytearray(c.payload)
                if p and rng.random() < 0.5:
                    p[rng.integers(len(p))] ^= 1 << int(rng.integers(8))
                chunks.append(Chunk(c.type, c.level, bytes(p), c.tile))
            mutated = write_stream(parsed.header, chunks)
        try:
            out = tiny.decode(mutated)
            assert out.dtype == np.uint8
            outcomes["ok"] += 1
        except DesyncError:                 # reached the entropy decoder and was caught there
            outcomes["desync"] += 1
        except (BitstreamError, ValueError):
            outcomes["error"] += 1
    assert outcomes["error"] > 300 and outcomes["desync"] > 50 and outcomes["ok"] > 0, outcomes


def test_cli_round_trip_and_errors(tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(synthetic(24, 40)).save(src)
    ssv, out = tmp_path / "a.ssv", tmp_path / "out.png"
    w = ["--weights", str(tiny_weights)]

    run = run_cli
    assert run("encode", str(src), "-o", str(ssv), "--levels", "2", "--with-y", *w) == 0  # the ELBO model
    assert run("info", str(ssv)) == 0
    assert "level 2" in capsys.readouterr().out
    assert run("decode", str(ssv), "-o", str(out), "--progressive", *w) == 0
    assert (tmp_path / "out_L1.png").exists() and (tmp_path / "out_L2.png").exists() and out.exists()
    assert run("truncate", str(ssv), "--levels", "1", "-o", str(tmp_path / "t.ssv")) == 0
    bad = bytearray(ssv.read_bytes())
    bad[60] ^= 0xFF
    (tmp_path / "bad.ssv").write_bytes(bytes(bad))
    capsys.readouterr()
    assert run("decode", str(tmp_path / "bad.ssv"), "-o", str(tmp_path / "bad.png"), *w) == 1
    err = capsys.readouterr().err
    assert "CRC" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.png").exists()
    assert run("decode", str(src), "-o", str(tmp_path / "x.png"), *w) == 1
    assert "not an ssvcodec file" in capsys.readouterr().err
    assert run("encode", str(tmp_path / "missing.png"), "-o", str(tmp_path / "m.ssv"), *w) == 1


# ----- with the shipped model on real images --------------------------------------------------
DETERMINISM_SCRIPT = """
import sys, hashlib, io, torch
torch.set_num_threads(1)
from PIL import Image
from ssvcodec.codec.api import Codec
c = Codec(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else Codec()
data = open(sys.argv[2], 'rb').read()
for s in c.decode_progressive(data):
    b = io.BytesIO(); Image.fromarray(s.image).save(b, format='PNG')
    print(s.level, hashlib.sha256(b.getvalue()).hexdigest())
"""


def _hashes(codec: Codec, data: bytes) -> list[str]:
    import hashlib
    import io

    out = []
    for s in codec.decode_progressive(data):
        b = io.BytesIO()
        Image.fromarray(s.image).save(b, format="PNG")
        out.append(f"{s.level} {hashlib.sha256(b.getvalue()).hexdigest()}")
    return out


def test_two_thread_encode_decodes_identically_in_a_fresh_one_thread_process(shipped: Codec, tmp_path: Path) -> None:
    img = kodak_crop("kodim23", (200, 100, 392, 260))
    torch.set_num_threads(2)
    data = shipped.encode(img, quality=4, with_y=True, lossless=True)
    here = _hashes(shipped, data)
    (tmp_path / "s.ssv").write_bytes(data)
    res = subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT, "", str(tmp_path / "s.ssv")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:-1] == here


def test_the_file_does_not_depend_on_the_thread_count(shipped: Codec) -> None:
    """Whole kodim04 at q=4: before the posteriors ran on one thread, two threads wrote 4 bytes
    fewer (a latent near a rounding boundary fell into the other bin)."""
    img = kodak_crop("kodim04", (0, 0, 512, 768))
    n = torch.get_num_threads()
    try:
        files = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            files.append(shipped.encode(img, quality=4, with_y=True))
    finally:
        torch.set_num_threads(n)
    assert files[0] == files[1]


@pytest.mark.parametrize("name", ["kodim04", "kodim23"])
def test_psnr_rises_with_every_level_on_kodak(shipped: Codec, name: str) -> None:
    img = kodak_crop(name, (128, 128, 384, 320))
    for with_y in (False, True):
        data = shipped.encode(img, quality=4, with_y=with_y, lossless=with_y)
        steps = list(shipped.decode_progressive(data))
        p = [psnr(img, s.image) for s in steps]
        assert all(b > a for a, b in zip(p, p[1:])), (name, with_y, p)
        if with_y:
            assert p[-1] == float("inf")


def test_chunk_sizes_match_the_models_estimate(shipped: Codec) -> None:
    img = kodak_crop("kodim04", (0, 0, 512, 384))
    _, report = shipped.encode_with_report(img, quality=8, with_y=True, lossless=True)
    for r in report:
        est = r["estimated_bits"] / 8
        if r["bytes"] >= 1000:
            assert abs(r["bytes"] - est) <= 0.02 * est, r
    total_est = sum(r["estimated_bits"] for r in report) / 8
    assert abs(sum(r["bytes"] for r in report) - total_est) <= 0.02 * total_est


def test_info_estimates_agree_with_the_encoders_report(tiny: Codec) -> None:
    data, report = tiny.encode_with_report(synthetic(48, 64, 5), quality=8, with_y=True)
    est = tiny.latent_estimates(data)
    latent = [r for r in report if r["type"] in ("U", "Z")]
    got = [e for e in est if e is not None]
    assert len(got) == len(latent) == 3
    for r, e in zip(latent, got):
        assert e == pytest.approx(r["estimated_bits"], rel=1e-9)
        assert abs(r["bytes"] - e / 8) <= max(8, 0.02 * e / 8)   # range-coder overhead: a few bytes
