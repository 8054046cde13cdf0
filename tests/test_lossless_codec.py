"""Lossless streams (codec/lossless_coder.py, ``RDCodec.encode(lossless=True)``, format versions 8, 7
and 6): the decoded image equals the input bit for bit for every image kind (RGB, grey, RGBA, odd
sizes, 1x1, tiles, JPEG-decoded pixels with chroma planes), the lossy prefix is the lossy stream,
and a damaged or foreign X chunk is refused."""
from __future__ import annotations

from pathlib import Path

import io

import numpy as np
import pytest
from PIL import Image

from ssvcodec.codec.bitstream import FORMAT_VERSION, Chunk, ChunkType, HeaderFlags, read_stream, truncate_levels, write_stream
from ssvcodec.codec import calibration
from ssvcodec.codec.lossless_coder import LosslessTileCoder
from ssvcodec.codec.rd_api import RDCodec

from .conftest import make_head_weights, run_cli, synthetic


@pytest.fixture(scope="module")
def codec(tiny_rd_weights: Path, tiny_head_weights: Path) -> RDCodec:
    return RDCodec(tiny_rd_weights, lossless_weights=tiny_head_weights)


def _rgba(h: int, w: int) -> np.ndarray:
    rgb = synthetic(h, w, 3)
    alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    alpha[: h // 2, : w // 2] = 0  # transparent pixels keep their colour too
    return np.concatenate([rgb, alpha[..., None]], 2)


@pytest.mark.parametrize("kind,size", [("rgb", (37, 53)), ("rgb", (1, 1)), ("rgb", (2, 9)), ("grey", (29, 31)),
                                       ("grey", (1, 1)), ("rgba", (23, 40)), ("rgba", (1, 1))])
def test_every_image_kind_decodes_bit_for_bit(codec: RDCodec, kind: str, size: tuple[int, int]) -> None:
    img = {"rgb": lambda: synthetic(*size), "grey": lambda: synthetic(*size, 1)[..., 0],
           "rgba": lambda: _rgba(*size)}[kind]()
    data = codec.encode(img, quality=3.0, lossless=True)
    hd = read_stream(data).header
    assert hd.version == FORMAT_VERSION and hd.flags & HeaderFlags.LOSSLESS and hd.channels == {"rgb": 3, "grey": 1, "rgba": 4}[kind]
    steps = list(codec.decode_progressive(data))
    assert [s.level for s in steps] == [1, 2, 3, 4] and steps[-1].label == "lossless"
    out = steps[-1].image
    assert out.dtype == np.uint8 and out.shape == img.shape and np.array_equal(out, img)
    assert np.array_equal(codec.decode(data), img)  # only the last level


def test_tiled_lossless_decodes_bit_for_bit(codec: RDCodec) -> None:
    img = _rgba(70, 90)
    data = codec.encode(img, quality=2.0, lossless=True, tile=32)
    parsed = read_stream(data)
    assert parsed.header.n_tiles == 9 and sum(c.type is ChunkType.X for c in parsed.chunks) == 9
    assert np.array_equal(codec.decode(data), img)


def test_pil_images_keep_their_mode(codec: RDCodec) -> None:
    rgba = _rgba(20, 24)
    for pil in (Image.fromarray(rgba, "RGBA"), Image.fromarray(rgba[..., 0], "L"), Image.fromarray(rgba[..., :3], "RGB")):
        out = codec.decode(codec.encode(pil, quality=4.0, lossless=True))
        assert np.array_equal(out, np.asarray(pil))
    la = Image.fromarray(rgba[..., [0, 3]], "LA")  # grey + alpha comes back as RGBA with equal colours
    out = codec.decode(codec.encode(la, quality=4.0, lossless=True))
    assert np.array_equal(out, np.asarray(la.convert("RGBA")))


def test_the_lossy_prefix_is_the_lossy_stream(codec: RDCodec) -> None:
    img = synthetic(40, 48, 5)
    exact = codec.encode(img, quality=5.0, lossless=True)
    lossy = codec.encode(img, quality=5.0)
    a, b = read_stream(exact), read_stream(lossy)
    assert [c.payload for c in a.chunks[:-1]] == [c.payload for c in b.chunks]
    assert a.chunks[-1].type is ChunkType.X
    prefix = truncate_levels(exact, 3)
    full = list(codec.decode_progressive(exact))
    for lv in (1, 2, 3):  # a truncation shows what the full stream showed (both render in float64)
        assert np.array_equal(codec.decode(truncate_levels(exact, lv)), full[lv - 1].image)
        assert np.array_equal(codec.decode(exact, lv), full[lv - 1].image)
    # and the float32 renders of the lossy stream differ from those at most by float rounding
    assert np.abs(codec.decode(prefix).astype(int) - codec.decode(lossy).astype(int)).max() <= 1
    with pytest.raises(ValueError, match="every level"):
        codec.encode(img, 2, 5.0, lossless=True)


def test_a_damaged_x_chunk_is_refused(codec: RDCodec) -> None:
    img = synthetic(32, 32, 7)
    data = codec.encode(img, quality=4.0, lossless=True)
    parsed = read_stream(data)
    x = parsed.chunks[-1]
    refused = 0
    start = calibration.unpack(x.payload, 18)[1]  # past the head's fingerprint, the CRC, the planes' flag and the calibration
    for pos in (start + 2, len(x.payload) // 2, len(x.payload) - 1):
        bad = bytearray(x.payload)
        bad[pos] ^= 0x10
        stream = write_stream(parsed.header, parsed.chunks[:-1] + [Chunk(ChunkType.X, x.level, bytes(bad), x.tile)])
        try:
            out = codec.decode(stream)
        except ValueError as e:
            assert "lossless chunk" in str(e)
            refused += 1
        else:  # a flip the entropy coder absorbs still has to give the same pixels (it never does silently otherwise)
            assert np.array_equal(out, img)
    assert refused >= 2


def test_a_calibration_block_that_does_not_fit_the_chunk_is_refused(codec: RDCodec) -> None:
    img = synthetic(32, 32, 7)
    parsed = read_stream(codec.encode(img, quality=4.0, lossless=True))
    x = parsed.chunks[-1]
    table, end = calibration.unpack(x.payload, 18)  # past the fingerprint, the CRC and the (empty) planes' flag
    assert len(table) == 30  # the untrained head is far from calibrated: every (stage, channel) has a row
    for rows in (table[:-1], np.concatenate([table, table[:1]])):
        bad = x.payload[:18] + calibration.pack(rows) + x.payload[end:]
        stream = write_stream(parsed.header, parsed.chunks[:-1] + [Chunk(ChunkType.X, x.level, bad, x.tile)])
        with pytest.raises(ValueError, match="lossless chunk|calibration block"):
            codec.decode(stream)
    cut = write_stream(parsed.header, parsed.chunks[:-1] + [Chunk(ChunkType.X, x.level, x.payload[:20], x.tile)])
    with pytest.raises(ValueError, match="calibration block truncated"):
        codec.decode(cut)


@pytest.mark.parametrize("kw", [{}, {"max_error": 2}, {"with_y": True}])
def test_version_6_streams_without_calibration_still_round_trip(codec: RDCodec, kw: dict) -> None:
    img = synthetic(40, 24, 5)
    data = codec.encode(img, quality=4.0, lossless=True, version=6, **kw)
    assert read_stream(data).header.version == 6
    bound = kw.get("max_error", 0)
    assert np.abs(codec.decode(data).astype(int) - img).max() <= bound
    newer = codec.encode(img, quality=4.0, lossless=True, **kw)
    assert read_stream(newer).header.version == FORMAT_VERSION == 8
    assert len(newer) < len(data)  # the untrained head gains from calibration far more than its block costs


def _jpeg_pixels(h: int, w: int, seed: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(synthetic(h, w, seed)).save(buf, format="JPEG", quality=90)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.mark.parametrize("tile", [None, 32])
def test_jpeg_decoded_pixels_travel_as_r_and_chroma_planes(codec: RDCodec, tile: int | None) -> None:
    """Format version 8: G and B of JPEG-decoded pixels follow from R and the X chunk's chroma
    planes; the stream decodes bit for bit (tiles too) and is smaller than version 7's; near-lossless,
    --with-y and PNG-like pixels keep the head's three channels."""
    img = _jpeg_pixels(45, 70, 2)
    data = codec.encode(img, quality=3.0, lossless=True, tile=tile)
    xs = [c for c in read_stream(data).chunks if c.type is ChunkType.X]
    assert all(LosslessTileCoder.planes_size(x.payload) > 0 for x in xs)
    assert np.array_equal(codec.decode(data), img)
    assert len(data) < len(codec.encode(img, quality=3.0, lossless=True, tile=tile, version=7))
    for kw in ({"max_error": 1}, {"with_y": True}):
        x = read_stream(codec.encode(img, quality=3.0, lossless=True, tile=tile, **kw)).chunks[-1]
        assert LosslessTileCoder.planes_size(x.payload) == 0
    x = read_stream(codec.encode(synthetic(45, 70, 2), quality=3.0, lossless=True)).chunks[-1]
    assert LosslessTileCoder.planes_size(x.payload) == 0


def test_damaged_chroma_planes_are_refused(codec: RDCodec) -> None:
    img = _jpeg_pixels(40, 48, 5)
    parsed = read_stream(codec.encode(img, quality=3.0, lossless=True))
    x = parsed.chunks[-1]
    size = LosslessTileCoder.planes_size(x.payload)
    assert x.payload[17] == 1 and int.from_bytes(x.payload[18:22], "little") == size  # after fingerprint and prefix
    for bad in (x.payload[:17] + b"\x02" + x.payload[18:],                     # a flag that is neither 0 nor 1
                x.payload[:18] + (size + 10 ** 6).to_bytes(4, "little") + x.payload[22:],  # a length past the end
                x.payload[:22] + bytes(size) + x.payload[22 + size:]):          # planes that do not decode
        stream = write_stream(parsed.header, parsed.chunks[:-1] + [Chunk(ChunkType.X, x.level, bad, x.tile)])
        with pytest.raises(ValueError, match="lossless chunk"):
            codec.decode(stream)


def test_another_head_is_named(codec: RDCodec, tiny_rd_weights: Path, tmp_path: Path) -> None:
    data = codec.encode(synthetic(16, 16), quality=4.0, lossless=True)
    other = RDCodec(tiny_rd_weights, lossless_weights=make_head_weights(tmp_path / "other.safetensors", 1))
    with pytest.raises(ValueError, match="lossless head"):
        other.decode(data)
    assert other.decode(data, 3).shape == (16, 16, 3)  # the lossy levels need no head
    missing = RDCodec(tiny_rd_weights, lossless_weights=tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="lossless head weights not found"):
        missing.encode(synthetic(16, 16), lossless=True)


def test_a_head_reading_the_decoders_features_decodes_bit_for_bit(tiny_rd_weights: Path, tmp_path: Path) -> None:
    """A head with ``features`` reads the exact render's stage inputs: lossless, near-lossless and
    CR streams (tiled too) decode as they should, and the features change the stream (they are
    read); a head whose feature count is not the RD model's width is refused."""
    head = make_head_weights(tmp_path / "feat.safetensors", features=8)  # the tiny RD model's width
    codec = RDCodec(tiny_rd_weights, lossless_weights=head)
    img = _rgba(37, 45)
    for tile in (None, 32):
        data = codec.encode(img, quality=3.0, lossless=True, tile=tile)
        assert np.array_equal(codec.decode(data), img)
    near = codec.decode(codec.encode(img, quality=3.0, lossless=True, max_error=2))
    assert np.abs(near[..., :3].astype(int) - img[..., :3].astype(int)).max() <= 2
    with_y = codec.encode(img[..., :3], quality=3.0, lossless=True, with_y=True)
    assert np.array_equal(codec.decode(with_y), img[..., :3])
    plain = RDCodec(tiny_rd_weights, lossless_weights=make_head_weights(tmp_path / "plain.safetensors"))
    assert len(plain.encode(img, quality=3.0, lossless=True)) != len(codec.encode(img, quality=3.0, lossless=True))
    wrong = RDCodec(tiny_rd_weights, lossless_weights=make_head_weights(tmp_path / "wrong.safetensors", features=5))
    with pytest.raises(ValueError, match="feature channels"):
        wrong.encode(img, lossless=True)


def test_cli_lossless_round_trip(codec: RDCodec, tiny_rd_weights: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(_rgba(19, 26), "RGBA").save(src)
    head = str(codec.lossless_weights)
    ssv, out = tmp_path / "a.ssv", tmp_path / "out.png"
    assert run_cli("encode", str(src), "-o", str(ssv), "--lossless", "--weights", str(tiny_rd_weights),
                   "--lossless-weights", head, "-q") == 0
    assert run_cli("decode", str(ssv), "-o", str(out), "--progressive", "--weights", str(tiny_rd_weights),
                   "--lossless-weights", head, "-q") == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(src)))
    assert [p.name for p in sorted(tmp_path.glob("out_L*.png"))] == ["out_L1.png", "out_L2.png", "out_L3.png", "out_L4.png"]
    assert run_cli("encode", str(src), "-o", str(tmp_path / "b.ssv"), "--lossless", "--bpp", "1",
                   "--weights", str(tiny_rd_weights), "--lossless-weights", head, "-q") != 0
    assert not (tmp_path / "b.ssv").exists()


@pytest.mark.parametrize("kind", ["rgb", "grey", "rgba"])
def test_near_lossless_stays_within_its_bound_and_costs_less(codec: RDCodec, kind: str) -> None:
    img = {"rgb": synthetic(33, 41, 8), "grey": synthetic(33, 41, 8)[..., 0], "rgba": _rgba(33, 41)}[kind]
    exact = len(codec.encode(img, quality=3.0, lossless=True))
    sizes = []
    for n in (1, 2):
        data = codec.encode(img, quality=3.0, lossless=True, max_error=n)
        steps = list(codec.decode_progressive(data))
        out = steps[-1].image
        assert steps[-1].label == f"max error {n}" and out.shape == img.shape
        err = np.abs(out.astype(np.int16) - img.astype(np.int16))
        assert err.max() <= n and err.max() == n  # the bound is used, never exceeded
        if kind == "rgba":
            assert np.array_equal(out[..., 3], img[..., 3])  # alpha stays exact
        sizes.append(len(data))
    assert sizes[1] < sizes[0] < exact
    with pytest.raises(ValueError, match="lossless=True"):
        codec.encode(img, max_error=1)


@pytest.mark.parametrize("kind", ["rgb", "grey", "rgba"])
def test_with_y_codes_y_exactly_and_costs_the_lossless_stream_nothing(codec: RDCodec, kind: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    img = {"rgb": synthetic(37, 45, 9), "grey": synthetic(37, 45, 9)[..., 0], "rgba": _rgba(37, 45)}[kind]
    both = codec.encode(img, quality=3.0, lossless=True, with_y=True)
    plain = codec.encode(img, quality=3.0, lossless=True)
    parsed = read_stream(both)
    assert parsed.header.flags & HeaderFlags.Y_CHUNKS and [c.type for c in parsed.chunks][-2:] == [ChunkType.Y, ChunkType.X]
    assert abs(len(both) - len(plain)) < 40  # the same sub-pixels under the same head, split into two chunks
    opened: list[str] = []
    real_open = LosslessTileCoder._open
    monkeypatch.setattr(LosslessTileCoder, "_open", lambda self, payload, channels, what, *args:
                        opened.append(what) or real_open(self, payload, channels, what, *args))
    steps = list(codec.decode_progressive(both))
    assert [s.label for s in steps] == ["L1", "L2", "CR3", "lossless"]
    assert np.array_equal(steps[-1].image, img)
    assert opened == ["Y", "X"]  # the lossless level reuses the CR walk's Y stages
    assert np.array_equal(codec.decode(both), img)  # and without the CR step, Y is decoded for X
    cr = steps[2].image
    colour = img[..., :3] if kind == "rgba" else img
    assert np.array_equal(cr[::2, ::2], colour[::2, ::2])  # y is exact in the CR image
    only_y = codec.encode(img, quality=3.0, with_y=True)
    assert read_stream(only_y).chunks[-1].type is ChunkType.Y
    assert np.array_equal(codec.decode(only_y), cr)
    assert np.array_equal(codec.decode(truncate_levels(both, 3)), cr)
    est = codec.latent_estimates(both)  # the latents' estimates only: Y and X have none
    assert [e is None for e in est] == [False, False, False, True, True]
