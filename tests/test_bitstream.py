"""Tests of codec/bitstream.py: layout, round trips, every error class, truncation and fuzzing."""
from __future__ import annotations

import binascii
import hashlib
import struct
import time
import zlib

import numpy as np
import pytest

from ssvcodec.codec import bitstream as bs
from ssvcodec.codec.bitstream import (
    ELBO_VERSION,
    BadMagic, BitstreamError, Chunk, ChunkCRCError, ChunkError, ChunkType, Header,
    HeaderError, HeaderFlags, StreamOrderError, UnsupportedVersion, WeightsMismatch,
    check_weights, describe, fingerprint, read_header, read_stream, truncate_levels,
    write_stream,
)

FP = fingerprint(b"test weights")
ALL_FLAGS = HeaderFlags.Y_CHUNKS | HeaderFlags.LOSSLESS


def make_header(**changes: object) -> Header:
    fields: dict[str, object] = dict(height=70, width=50, channels=3, levels=2, quality=1.25,
                                     fingerprint=FP, flags=ALL_FLAGS, version=ELBO_VERSION)
    fields.update(changes)
    return Header(**fields)  # type: ignore[arg-type]


def make_chunks() -> list[Chunk]:
    """A K=2 stream: u, y_1 (empty), z_1, y_2, z_2, x."""
    return [
        Chunk(ChunkType.U, 0, b"u-payload"),
        Chunk(ChunkType.Y, 1, b""),
        Chunk(ChunkType.Z, 1, b"z1"),
        Chunk(ChunkType.Y, 2, bytes(range(40))),
        Chunk(ChunkType.Z, 2, b"z2-bits"),
        Chunk(ChunkType.X, 3, b"lossless x" * 3),
    ]


# Raw builders that follow docs/bitstream.md byte by byte, independently of the module's structs.
def raw_header(magic: bytes = b"SSVC", version: int = 1, flags: int = 3, channels: int = 3,
               levels: int = 2, fp: bytes = FP, height: int = 70, width: int = 50,
               tile_h: int = 0, tile_w: int = 0, quality: int = 125,
               crc: int | None = None) -> bytes:
    body = (magic + bytes([version, flags, channels, levels]) + fp
            + height.to_bytes(4, "little") + width.to_bytes(4, "little")
            + tile_h.to_bytes(2, "little") + tile_w.to_bytes(2, "little")
            + quality.to_bytes(2, "little"))
    assert len(body) == 38
    return body + (zlib.crc32(body) if crc is None else crc).to_bytes(4, "little")


def raw_chunk(type_id: int, level: int, payload: bytes = b"", tile: int = 0,
              length: int | None = None) -> bytes:
    head = (bytes([type_id, level]) + tile.to_bytes(4, "little")
            + (len(payload) if length is None else length).to_bytes(4, "little"))
    head += zlib.crc32(head).to_bytes(4, "little")
    return head + payload + zlib.crc32(head + payload).to_bytes(4, "little")


# --- layout ---------------------------------------------------------------------------------
def test_stable_ids_and_sizes() -> None:
    assert {t.name: int(t) for t in ChunkType} == {"U": 1, "Z": 2, "Y": 3, "X": 4}
    assert int(HeaderFlags.Y_CHUNKS) == 1 and int(HeaderFlags.LOSSLESS) == 2
    assert bs.MAGIC == b"SSVC" and bs.FORMAT_VERSION == 8 and bs.PLANES_VERSION == 8 and bs.CALIBRATED_VERSION == 7 and bs.TABLED_VERSION == 6
    assert bs.COMPACT_VERSION == 5
    assert bs.EXACT_VERSION == 4 and bs.LOSSY_VERSION == 2 and bs.ELBO_VERSION == 1
    assert bs.HEADER_SIZE == 42 and bs.CHUNK_HEAD_SIZE == 14 and bs.CHUNK_OVERHEAD == 18


def test_layout_matches_the_documented_bytes() -> None:
    header = make_header(tile_height=32, tile_width=16)
    chunks = [Chunk(ChunkType.U, 0, b"abc", tile=5)]
    data = write_stream(header, chunks)
    assert data == raw_header(tile_h=32, tile_w=16) + raw_chunk(1, 0, b"abc", tile=5)
    assert len(data) == 42 + 18 + 3
    # a few fields read back at their documented offsets
    assert struct.unpack_from("<II", data, 24) == (70, 50)
    assert struct.unpack_from("<HHH", data, 32) == (32, 16, 125)
    assert data[8:24] == FP
    assert struct.unpack_from("<BBII", data, 42) == (1, 0, 5, 3)


def test_golden_stream() -> None:
    """Pins the exact bytes of a tiny stream: changing them needs a new format version."""
    header = Header(height=2, width=3, channels=1, levels=1, quality=0.5,
                    fingerprint=bytes(range(16)), version=ELBO_VERSION)
    data = write_stream(header, [Chunk(ChunkType.U, 0, b"\x01\x02"), Chunk(ChunkType.Z, 1, b"")])
    assert data.hex() == (
        # header: magic, version 1, flags 0, channels 1, K 1, fingerprint 00..0f,
        # height 2, width 3, tile 0x0, quality 50 (0.50), header CRC
        "53535643" "01" "00" "01" "01" "000102030405060708090a0b0c0d0e0f"
        "02000000" "03000000" "0000" "0000" "3200" "cee6871d"
        # chunk 0: type U, level 0, tile 0, length 2, head CRC, payload 01 02, CRC
        "01" "00" "00000000" "02000000" "c3cb41a6" "0102" "cef1d746"
        # chunk 1: type Z, level 1, tile 0, length 0, head CRC, CRC
        "02" "01" "00000000" "00000000" "08ac04f0" "1cdf4421"
    )
    assert data[38:42] == zlib.crc32(data[:38]).to_bytes(4, "little")
    assert data[72:76] == zlib.crc32(data[62:72]).to_bytes(4, "little")
    assert data[76:80] == zlib.crc32(data[62:76]).to_bytes(4, "little")


def test_golden_stream_version_2() -> None:
    """The rate-distortion format (v2) differs from v1 in the version byte alone (and so the
    header CRC); it refuses the Y / X chunk flags."""
    header = Header(height=2, width=3, channels=1, levels=1, quality=0.5, fingerprint=bytes(range(16)), version=2)
    data = write_stream(header, [Chunk(ChunkType.U, 0, b"\x01\x02"), Chunk(ChunkType.Z, 1, b"")])
    assert data[:42].hex() == ("53535643" "02" "00" "01" "01" "000102030405060708090a0b0c0d0e0f"
                               "02000000" "03000000" "0000" "0000" "3200" "94150170")
    assert read_stream(data).header.version == 2
    with pytest.raises(HeaderError, match="no Y or X chunks"):
        write_stream(Header(height=2, width=3, channels=1, levels=1, quality=0.5, fingerprint=bytes(range(16)),
                            flags=HeaderFlags.LOSSLESS, version=2), [])


def test_golden_stream_version_4() -> None:
    """Version 4 (as 3 before it) is version 2 plus the LOSSLESS flag and an X chunk per tile at
    level K + 1 (the version byte, the flag and so the header CRC differ), and the Y_CHUNKS flag
    with a Y chunk per tile at level K."""
    header = Header(height=2, width=3, channels=1, levels=1, quality=0.5, fingerprint=bytes(range(16)),
                    flags=HeaderFlags.LOSSLESS, version=4)
    data = write_stream(header, [Chunk(ChunkType.U, 0, b"\x01\x02"), Chunk(ChunkType.Z, 1, b""),
                                 Chunk(ChunkType.X, 2, b"\x07")])
    assert data[:8].hex() == "53535643" "04" "02" "01" "01"
    parsed = read_stream(data)
    assert parsed.header == header and [c.type for c in parsed.chunks] == [ChunkType.U, ChunkType.Z, ChunkType.X]
    assert [c.progressive_level for c in parsed.chunks] == [1, 2, 3]
    with_y = Header(height=2, width=3, channels=1, levels=1, quality=0.5, fingerprint=bytes(range(16)),
                    flags=HeaderFlags.LOSSLESS | HeaderFlags.Y_CHUNKS, version=4)
    data = write_stream(with_y, [Chunk(ChunkType.U, 0, b""), Chunk(ChunkType.Z, 1, b""), Chunk(ChunkType.Y, 1, b"\x05"),
                                 Chunk(ChunkType.X, 2, b"")])
    assert [c.progressive_level for c in read_stream(data).chunks] == [1, 2, 2, 3]


# --- round trips ----------------------------------------------------------------------------
def test_round_trip() -> None:
    header, chunks = make_header(), make_chunks()
    data = write_stream(header, chunks)
    parsed = read_stream(data)
    assert parsed.header == header
    assert parsed.header.quality == 1.25
    assert parsed.chunks == chunks
    assert parsed.truncated is False
    assert parsed.valid_length == len(data)
    sizes = [18 + len(c.payload) for c in chunks]
    assert [s.size for s in parsed.spans] == sizes
    assert [s.offset for s in parsed.spans] == list(42 + np.cumsum([0] + sizes[:-1]))
    assert len(data) == 42 + sum(sizes)
    assert parsed.max_level == 4
    # bytes-like inputs work too
    assert read_stream(bytearray(data)) == parsed
    assert read_stream(memoryview(data)) == parsed


def test_round_trip_large_payload_and_tiles() -> None:
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    header = make_header(height=1000, width=3000, tile_height=512, tile_width=1024,
                         quality=327.67, channels=4)
    assert header.tile_grid == (2, 3) and header.n_tiles == 6
    chunks = [Chunk(ChunkType.U, 0, bytes([t]) * t, tile=t) for t in range(6)]
    chunks += [Chunk(ChunkType.Z, 1, big, tile=3), Chunk(ChunkType.Z, 2, b"", tile=5)]
    parsed = read_stream(write_stream(header, chunks))
    assert parsed.header == header and parsed.header.quality == 327.67
    assert parsed.chunks == chunks
    assert parsed.chunks[6].payload == big
    assert parsed.spans[6].payload_size == 3_000_000


@pytest.mark.parametrize("quality", [-327.68, -4.25, 0, 0.01, 0.07, 0.1, 1, 3.33, 99.99, 327.67])
def test_quality_round_trips_exactly(quality: float) -> None:
    header = make_header(quality=quality)
    assert read_header(write_stream(header, [])).quality == quality


def test_extreme_header_values_round_trip() -> None:
    header = make_header(height=bs.MAX_SIDE, width=bs.MAX_PIXELS // bs.MAX_SIDE, channels=1,
                         levels=bs.MAX_LEVELS, flags=HeaderFlags.NONE,
                         tile_height=bs.MAX_TILE_SIDE, tile_width=bs.MIN_TILE_SIDE)
    assert read_stream(write_stream(header, [])).header == header


def test_plain_vae_has_only_u_and_x() -> None:
    header = make_header(levels=0)
    chunks = [Chunk(ChunkType.U, 0, b"u"), Chunk(ChunkType.X, 1, b"x")]
    assert read_stream(write_stream(header, chunks)).chunks == chunks
    with pytest.raises(ChunkError, match="none"):
        write_stream(header, [Chunk(ChunkType.Z, 1, b"")])


def test_header_only_stream_is_valid() -> None:
    data = write_stream(make_header(), [])
    parsed = read_stream(data)
    assert (parsed.chunks, parsed.truncated, parsed.valid_length) == ([], False, 42)


def test_chunk_accepts_bytes_like_and_int_type() -> None:
    chunk = Chunk(3, 1, bytearray(b"ab"))  # type: ignore[arg-type]
    assert chunk.type is ChunkType.Y and chunk.payload == b"ab" and type(chunk.payload) is bytes
    assert chunk == Chunk(ChunkType.Y, 1, b"ab")
    assert chunk.progressive_level == 2 and chunk.label == "Y level 1"
    assert Chunk(ChunkType.Z, 2, tile=7).label == "Z level 2, tile 7"


def test_describe() -> None:
    parsed = read_stream(write_stream(make_header(), make_chunks()))
    rows = describe(parsed)
    assert [r["type"] for r in rows] == ["U", "Y", "Z", "Y", "Z", "X"]
    assert [r["level"] for r in rows] == [0, 1, 1, 2, 2, 3]
    assert [r["progressive_level"] for r in rows] == [1, 2, 2, 3, 3, 4]
    assert rows[0] == {"index": 0, "type": "U", "level": 0, "progressive_level": 1, "tile": 0,
                       "offset": 42, "payload_bytes": 9, "bytes": 27}
    assert rows[1]["offset"] == 69 and rows[1]["payload_bytes"] == 0 and rows[1]["bytes"] == 18
    assert sum(r["bytes"] for r in rows) + 42 == parsed.valid_length


def test_fingerprint_and_weights_check() -> None:
    assert fingerprint(b"abc") == hashlib.sha256(b"abc").digest()[:16]
    assert len(FP) == 16
    header = read_header(write_stream(make_header(), []))
    assert header.fingerprint == FP
    check_weights(header, FP)
    with pytest.raises(WeightsMismatch, match=FP.hex()):
        check_weights(header, fingerprint(b"other"))


# --- truncation -----------------------------------------------------------------------------
def test_truncation_at_every_offset() -> None:
    chunks = make_chunks()
    data = write_stream(make_header(), chunks)
    ends = list(42 + np.cumsum([18 + len(c.payload) for c in chunks]))
    for cut in range(len(data) + 1):
        prefix = data[:cut]
        if cut < 42:
            with pytest.raises(HeaderError, match="empty|truncated header"):
                read_stream(prefix)
            continue
        parsed = read_stream(prefix)
        whole = sum(1 for e in ends if e <= cut)
        assert parsed.chunks == chunks[:whole], cut
        assert parsed.truncated == (cut not in [42] + ends), cut
        assert parsed.valid_length == ([42] + ends)[whole]


def test_truncate_levels_is_a_prefix() -> None:
    chunks = make_chunks()
    data = write_stream(make_header(), chunks)
    expected_counts = {0: 0, 1: 1, 2: 3, 3: 5, 4: 6, 5: 6, 100: 6}
    for levels, count in expected_counts.items():
        cut = truncate_levels(data, levels)
        assert data.startswith(cut)
        parsed = read_stream(cut)
        assert parsed.chunks == chunks[:count]
        assert not parsed.truncated
        assert all(c.progressive_level <= levels for c in parsed.chunks)
        assert len(cut) == 42 + sum(18 + len(c.payload) for c in chunks[:count])
    # a truncated tail is dropped
    assert truncate_levels(data[:-1], 9) == truncate_levels(data, 3)
    with pytest.raises(ValueError, match="levels"):
        truncate_levels(data, -1)
    with pytest.raises(BadMagic):
        truncate_levels(b"GIF89a" + data, 1)


def test_truncate_levels_with_tiles() -> None:
    header = make_header(tile_height=64, tile_width=32)     # 2x2 tiles
    chunks = [Chunk(ChunkType.U, 0, b"u", tile=t) for t in range(4)]
    chunks += [Chunk(ChunkType.Z, 1, b"z1", tile=t) for t in (3, 0, 1)]
    data = write_stream(header, chunks)
    assert read_stream(truncate_levels(data, 1)).chunks == chunks[:4]
    assert truncate_levels(data, 2) == data


# --- corruption -----------------------------------------------------------------------------
def test_every_chunk_byte_flip_fails_the_crc() -> None:
    data = write_stream(make_header(), make_chunks())
    for pos in range(42, len(data)):
        for mask in (0x01, 0x80, 0xFF):
            corrupt = bytearray(data)
            corrupt[pos] ^= mask
            with pytest.raises(ChunkCRCError, match="failed its CRC check: the file is corrupted"):
                read_stream(bytes(corrupt))


def test_every_header_byte_flip_is_an_error() -> None:
    data = write_stream(make_header(), make_chunks())
    for pos in range(42):
        for mask in (0x01, 0xFF):
            corrupt = bytearray(data)
            corrupt[pos] ^= mask
            expected = BadMagic if pos < 4 else UnsupportedVersion if pos == 4 else HeaderError
            with pytest.raises(expected):
                read_stream(bytes(corrupt))


def test_crc_error_names_the_chunk() -> None:
    chunks = make_chunks()
    data = bytearray(write_stream(make_header(), chunks))
    offset = read_stream(bytes(data)).spans[4].offset
    data[offset + 15] ^= 0x10       # inside the payload of chunk 4 (Z level 2)
    with pytest.raises(ChunkCRCError) as info:
        read_stream(bytes(data))
    assert str(info.value) == (f"chunk 4 at byte {offset} (Z level 2) failed its CRC check: "
                               "the file is corrupted")
    data[offset + 15] ^= 0x10
    data[offset + 1] ^= 0x01        # the level byte of the same chunk's head
    with pytest.raises(ChunkCRCError, match=f"chunk 4 at byte {offset}: the chunk head failed"):
        read_stream(bytes(data))


def test_trailing_garbage_is_an_error() -> None:
    data = write_stream(make_header(), make_chunks())
    with pytest.raises(ChunkCRCError):
        read_stream(data + bytes(range(20)))
    assert read_stream(data + b"\x00" * 13).truncated   # too short to be a chunk head


# --- every error class ----------------------------------------------------------------------
@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n" + bytes(60), b"GIF8", b"X",
                                  b"ssvc" + bytes(50)])
def test_bad_magic(data: bytes) -> None:
    with pytest.raises(BadMagic, match=r"not an ssvcodec file \(bad magic b'"):
        read_stream(data)


def test_bad_magic_message() -> None:
    with pytest.raises(BadMagic) as info:
        read_stream(b"\x89PNG\r\n\x1a\n")
    assert str(info.value) == "not an ssvcodec file (bad magic b'\\x89PNG')"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("version,hint", [(0, "corrupted"), (9, "newer"), (255, "newer")])
def test_unsupported_version(version: int, hint: str) -> None:
    data = raw_header(version=version)
    with pytest.raises(UnsupportedVersion, match=f"version {version} .*{hint}"):
        read_stream(data)
    with pytest.raises(UnsupportedVersion):
        read_stream(data[:5])           # refused before the rest of the header arrives
    with pytest.raises(UnsupportedVersion):
        write_stream(make_header(version=version), [])


def test_header_crc_and_truncation() -> None:
    good = raw_header()
    assert read_header(good) == make_header()
    with pytest.raises(HeaderError, match="header failed its CRC check"):
        read_header(raw_header(crc=zlib.crc32(good[:38]) ^ 1))
    with pytest.raises(HeaderError, match="truncated header: 41 of 42 bytes"):
        read_header(good[:41])
    with pytest.raises(HeaderError, match="truncated header: 2 of 42"):
        read_header(b"SS")
    with pytest.raises(HeaderError, match="empty input"):
        read_header(b"")


ABSURD_RAW_HEADERS = {
    "height 0": dict(height=0),
    "height over MAX_SIDE": dict(height=bs.MAX_SIDE + 1),
    "width 2**32-1": dict(width=2**32 - 1),
    "too many pixels": dict(height=bs.MAX_SIDE, width=bs.MAX_SIDE),
    "channels 2": dict(channels=2),
    "channels 0": dict(channels=0),
    "K 9": dict(levels=bs.MAX_LEVELS + 1),
    "reserved flag": dict(flags=0x80),
    "half tiled": dict(tile_h=16, tile_w=0),
    "tile too small": dict(tile_h=8, tile_w=8),
}


@pytest.mark.parametrize("fields", ABSURD_RAW_HEADERS.values(), ids=ABSURD_RAW_HEADERS.keys())
def test_absurd_header_values_are_read_errors(fields: dict[str, int]) -> None:
    with pytest.raises(HeaderError):
        read_stream(raw_header(**fields))  # type: ignore[arg-type]


ABSURD_HEADERS = {
    "height 0": dict(height=0),
    "width negative": dict(width=-5),
    "too many pixels": dict(height=bs.MAX_SIDE, width=bs.MAX_SIDE),
    "channels 2": dict(channels=2),
    "channels float": dict(channels=3.0),
    "K 9": dict(levels=9),
    "quality not in hundredths": dict(quality=0.123),
    "quality too large": dict(quality=327.68),
    "quality too small": dict(quality=-327.69),
    "quality nan": dict(quality=float("nan")),
    "short fingerprint": dict(fingerprint=b"\x00" * 15),
    "fingerprint not bytes": dict(fingerprint="0" * 16),
    "reserved flag": dict(flags=4),
    "half tiled": dict(tile_height=0, tile_width=64),
    "tile too large": dict(tile_height=65536, tile_width=64),
}


@pytest.mark.parametrize("changes", ABSURD_HEADERS.values(), ids=ABSURD_HEADERS.keys())
def test_absurd_header_values_are_write_errors(changes: dict[str, object]) -> None:
    with pytest.raises(HeaderError):
        write_stream(make_header(**changes), [])


def test_header_error_message_is_one_line() -> None:
    with pytest.raises(HeaderError) as info:
        read_stream(raw_header(height=bs.MAX_SIDE, width=bs.MAX_SIDE))
    assert str(info.value) == "image of 262144x262144 pixels exceeds the limit of 4294967296 pixels"


BAD_RAW_CHUNKS = {
    "type 0": (raw_chunk(0, 0), "unknown type 0"),
    "type 5": (raw_chunk(5, 0), "unknown type 5"),
    "type 200": (raw_chunk(200, 1), "unknown type 200"),
    "U level 1": (raw_chunk(1, 1), "U chunk of level 1"),
    "Z level 0": (raw_chunk(2, 0), "Z chunk of level 0"),
    "Z level K+1": (raw_chunk(2, 3), "level must be 1..2"),
    "Y level 3": (raw_chunk(3, 3), "Y chunk of level 3"),
    "X level K": (raw_chunk(4, 2), "X chunk of level 2"),
    "tile 1 untiled": (raw_chunk(1, 0, tile=1), "tile index 1, but the image has 1 tile"),
    "absurd length": (raw_chunk(1, 0, length=bs.MAX_PAYLOAD + 1)[:14], "over the"),
}


@pytest.mark.parametrize("chunk,message", BAD_RAW_CHUNKS.values(), ids=BAD_RAW_CHUNKS.keys())
def test_bad_chunk_heads(chunk: bytes, message: str) -> None:
    data = raw_header() + raw_chunk(1, 0, b"u") + chunk
    with pytest.raises(ChunkError, match=f"chunk 1 at byte 61 .*{message}"):
        read_stream(data)


def test_chunk_types_need_their_flags() -> None:
    with pytest.raises(ChunkError, match="Y_CHUNKS flag"):
        read_stream(raw_header(flags=2) + raw_chunk(3, 1))
    with pytest.raises(ChunkError, match="LOSSLESS flag"):
        read_stream(raw_header(flags=1) + raw_chunk(4, 3))
    with pytest.raises(ChunkError, match="LOSSLESS flag"):
        write_stream(make_header(flags=HeaderFlags.NONE), [Chunk(ChunkType.X, 3)])


def test_writer_rejects_bad_chunks() -> None:
    with pytest.raises(ChunkError, match="unknown chunk type 9"):
        Chunk(9, 0)  # type: ignore[arg-type]
    with pytest.raises(ChunkError, match="tile index 4, but the image has 4 tile"):
        write_stream(make_header(tile_height=64, tile_width=32), [Chunk(ChunkType.U, 0, tile=4)])
    with pytest.raises(ChunkError, match="level"):
        write_stream(make_header(), [Chunk(ChunkType.Z, 300)])


def test_out_of_order_levels() -> None:
    data = raw_header() + raw_chunk(2, 1, b"z1") + raw_chunk(1, 0, b"u")
    with pytest.raises(StreamOrderError) as info:
        read_stream(data)
    assert str(info.value) == ("chunk 1 at byte 62 (U level 0) comes after a chunk of level 1: "
                               "chunks must be in non-decreasing level order")
    with pytest.raises(StreamOrderError):
        write_stream(make_header(), [Chunk(ChunkType.Z, 2), Chunk(ChunkType.Z, 1)])


def test_repeated_chunk() -> None:
    with pytest.raises(StreamOrderError, match="repeats an earlier chunk"):
        read_stream(raw_header() + raw_chunk(1, 0, b"a") + raw_chunk(1, 0, b"b"))
    with pytest.raises(StreamOrderError, match="repeats"):
        write_stream(make_header(), [Chunk(ChunkType.U, 0), Chunk(ChunkType.U, 0)])


def test_all_errors_are_value_errors() -> None:
    for cls in (BadMagic, UnsupportedVersion, HeaderError, ChunkError, ChunkCRCError,
                StreamOrderError, WeightsMismatch):
        assert issubclass(cls, BitstreamError) and issubclass(cls, ValueError)


# --- fuzzing --------------------------------------------------------------------------------
def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    buf = bytearray(data)
    op = int(rng.integers(0, 8))
    if op == 0:                                     # flip 1-4 random bytes
        for pos in rng.integers(0, len(buf), int(rng.integers(1, 5))):
            buf[pos] ^= int(rng.integers(1, 256))
    elif op == 1:                                   # insert random bytes
        pos = int(rng.integers(0, len(buf) + 1))
        buf[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 20)), dtype=np.uint8).tobytes()
    elif op == 2:                                   # delete a range
        pos = int(rng.integers(0, len(buf)))
        del buf[pos:pos + int(rng.integers(1, 20))]
    elif op == 3:                                   # truncate
        del buf[int(rng.integers(0, len(buf) + 1)):]
    elif op == 4:                                   # random bytes
        buf = bytearray(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
    elif op == 5:                                   # random bytes behind a valid magic + version
        buf = bytearray(b"SSVC\x01" + rng.integers(0, 256, int(rng.integers(0, 200)),
                                                   dtype=np.uint8).tobytes())
    elif op == 6:                                   # random header fields with a valid CRC
        fields = bytearray(b"SSVC\x01" + rng.integers(0, 256, 33, dtype=np.uint8).tobytes())
        fields[5] &= int(rng.choice([0, 1, 3, 0xFF]))
        fields[6:8] = bytes([int(rng.choice([1, 3, 4, 2])), int(rng.integers(0, 10))])
        buf = fields + zlib.crc32(bytes(fields)).to_bytes(4, "little") + buf[42:]
    else:                                           # a random chunk head with valid CRCs
        payload = rng.integers(0, 256, int(rng.integers(0, 8)), dtype=np.uint8).tobytes()
        buf += raw_chunk(int(rng.integers(0, 6)), int(rng.integers(0, 5)), payload,
                         tile=int(rng.integers(0, 3)))
    return bytes(buf)


@pytest.mark.timeout(60)
def test_fuzz_only_bitstream_errors() -> None:
    rng = np.random.default_rng(20240611)
    bases = [
        write_stream(make_header(), make_chunks()),
        write_stream(make_header(tile_height=64, tile_width=32, levels=1),
                     [Chunk(ChunkType.U, 0, b"a", tile=t) for t in range(4)]
                     + [Chunk(ChunkType.Z, 1, b"zz", tile=0), Chunk(ChunkType.X, 2, b"xyz")]),
        write_stream(make_header(flags=HeaderFlags.NONE), [Chunk(ChunkType.U, 0, bytes(100))]),
    ]
    outcomes: dict[str, int] = {}
    start = time.perf_counter()
    for i in range(3000):
        data = _mutate(rng, bases[i % len(bases)])
        if rng.random() < 0.3:                      # sometimes mutate twice
            data = _mutate(rng, data)
        try:
            parsed = read_stream(data)
        except BitstreamError as error:
            assert "\n" not in str(error) and str(error)
            outcomes[type(error).__name__] = outcomes.get(type(error).__name__, 0) + 1
            continue
        # a successful parse returns only real chunks: re-serializing gives the valid prefix
        assert write_stream(parsed.header, parsed.chunks) == data[:parsed.valid_length]
        assert parsed.truncated == (parsed.valid_length < len(data))
        outcomes["ok"] = outcomes.get("ok", 0) + 1
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"fuzzing took {elapsed:.1f} s"
    assert sum(outcomes.values()) == 3000
    for name in ("ok", "BadMagic", "UnsupportedVersion", "HeaderError", "ChunkError",
                 "ChunkCRCError", "StreamOrderError"):
        assert outcomes.get(name, 0) > 0, outcomes


# --- version 5: the compact layout ----------------------------------------------------------
FP8 = FP[:8]


def leb128(n: int) -> bytes:
    """Unsigned LEB128, written independently of the module."""
    out = []
    while True:
        out.append(n & 0x7F)
        n >>= 7
        if not n:
            break
    return bytes([b | 0x80 for b in out[:-1]] + out[-1:])


def raw_header_v5(flags: int = 3, channels: int = 3, levels: int = 2, fp: bytes = FP8, height: int = 70,
                  width: int = 50, tile: tuple[int, int] | None = None, quality: int = 125,
                  packed: int | None = None, crc: int | None = None) -> bytes:
    if packed is None:
        packed = (0x80 if tile else 0) | levels << 3 | channels
    body = (b"SSVC" + bytes([5, flags, packed]) + fp + quality.to_bytes(2, "little", signed=True)
            + leb128(height) + leb128(width) + (leb128(tile[0]) + leb128(tile[1]) if tile else b""))
    return body + (zlib.crc32(body) if crc is None else crc).to_bytes(4, "little")


def raw_chunk_v5(type_id: int, level: int, payload: bytes = b"", tile: int = 0, length: int | None = None) -> bytes:
    head = bytes([type_id << 4 | level]) + leb128(tile) + leb128(len(payload) if length is None else length)
    head += binascii.crc_hqx(head, 0).to_bytes(2, "little")
    return head + payload + zlib.crc32(head + payload).to_bytes(4, "little")


def make_header_v5(**changes: object) -> Header:
    return make_header(**{"fingerprint": FP8, "version": 5, **changes})


def test_v5_golden_stream() -> None:
    """Pins the exact bytes of a tiny version-5 stream: changing them needs a new format version."""
    header = Header(height=2, width=3, channels=1, levels=1, quality=0.5, fingerprint=bytes(range(8)), version=5)
    data = write_stream(header, [Chunk(ChunkType.U, 0, b"\x01\x02"), Chunk(ChunkType.Z, 1, b"")])
    assert data.hex() == (
        # header: magic, version 5, flags 0, packed (untiled, K 1, channels 1), fingerprint 00..07,
        # quality 50 (0.50), height 2, width 3, header CRC
        "53535643" "05" "00" "09" "0001020304050607" "3200" "02" "03" "6efadbb8"
        # chunk 0: type U | level 0, tile 0, length 2, head CRC-16, payload 01 02, CRC
        "10" "00" "02" "2163" "0102" "9ffd7825"
        # chunk 1: type Z | level 1, tile 0, length 0, head CRC-16, CRC
        "21" "00" "00" "f6b1" "883403c4"
    )
    assert data[19:23] == zlib.crc32(data[:19]).to_bytes(4, "little")
    assert data[26:28] == binascii.crc_hqx(data[23:26], 0).to_bytes(2, "little")
    assert data[30:34] == zlib.crc32(data[23:30]).to_bytes(4, "little")
    parsed = read_stream(data)
    assert parsed.header == header and parsed.header_size == 23
    assert [(s.offset, s.size, s.payload_size) for s in parsed.spans] == [(23, 11, 2), (34, 9, 0)]


def test_v6_container_is_v5s_but_for_the_version_byte() -> None:
    """Version 6 changed only what latent payloads hold (docs/bitstream.md): its container bytes
    are version 5's with the version byte 6 and the header CRC over it."""
    header = make_header_v5(tile_height=32, tile_width=16, height=300, width=200)
    chunks = [Chunk(ChunkType.U, 0, b"abc", tile=5), Chunk(ChunkType.Z, 1, bytes(200), tile=129)]
    v5, v6 = write_stream(header, chunks), write_stream(make_header_v5(tile_height=32, tile_width=16, height=300,
                                                                       width=200, version=6), chunks)
    n = read_stream(v5).header_size
    assert v6[n:] == v5[n:] and v6[4] == 6 and v6[:4] + v6[5:n - 4] == v5[:4] + v5[5:n - 4]
    assert v6[n - 4:n] == zlib.crc32(v6[:n - 4]).to_bytes(4, "little")
    parsed = read_stream(v6)
    assert parsed.header.version == 6 and parsed.chunks == chunks


def test_v5_layout_matches_the_documented_bytes() -> None:
    header = make_header_v5(tile_height=32, tile_width=16, height=300, width=200)
    chunks = [Chunk(ChunkType.U, 0, b"abc", tile=5), Chunk(ChunkType.Z, 1, bytes(200), tile=129)]
    data = write_stream(header, chunks)
    assert data == (raw_header_v5(tile=(32, 16), height=300, width=200)
                    + raw_chunk_v5(1, 0, b"abc", tile=5) + raw_chunk_v5(2, 1, bytes(200), tile=129))
    assert read_stream(data).header_size == 17 + 2 + 2 + 1 + 1 + 4


def test_v5_round_trip_every_chunk_kind_and_large_values() -> None:
    header, chunks = make_header_v5(), make_chunks()
    data = write_stream(header, chunks)
    parsed = read_stream(data)
    assert parsed.header == header and parsed.chunks == chunks and not parsed.truncated
    assert len(data) == 23 + sum(9 + len(c.payload) for c in chunks)
    rng = np.random.default_rng(5)
    big = rng.integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    header = make_header_v5(height=bs.MAX_SIDE, width=bs.MAX_PIXELS // bs.MAX_SIDE, channels=4, levels=bs.MAX_LEVELS,
                            tile_height=bs.MAX_TILE_SIDE, tile_width=bs.MIN_TILE_SIDE, quality=-327.68)
    chunks = [Chunk(ChunkType.U, 0, b"u", tile=header.n_tiles - 1), Chunk(ChunkType.X, 9, big, tile=3)]
    parsed = read_stream(write_stream(header, chunks))
    assert parsed.header == header and parsed.chunks == chunks and parsed.spans[1].payload_size == 3_000_000


def test_v5_truncation_at_every_offset_and_truncate_levels() -> None:
    chunks = make_chunks()
    data = write_stream(make_header_v5(), chunks)
    ends = list(23 + np.cumsum([9 + len(c.payload) for c in chunks]))
    for cut in range(len(data) + 1):
        if cut < 23:
            with pytest.raises(HeaderError, match="empty|truncated header"):
                read_stream(data[:cut])
            continue
        parsed = read_stream(data[:cut])
        whole = sum(1 for e in ends if e <= cut)
        assert parsed.chunks == chunks[:whole] and parsed.truncated == (cut not in [23] + ends), cut
    assert truncate_levels(data, 0) == data[:23]
    assert truncate_levels(data, 2) == data[:ends[2]]
    assert truncate_levels(data[:-1], 9) == data[:ends[4]]


def test_v5_every_byte_flip_is_an_error() -> None:
    data = write_stream(make_header_v5(), make_chunks())
    for pos in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            corrupt = bytearray(data)
            corrupt[pos] ^= mask
            expected = (BadMagic if pos < 4 else (UnsupportedVersion, HeaderError) if pos == 4  # 5 ^ 1 = 4
                        else HeaderError if pos < 23 else ChunkCRCError)
            with pytest.raises(expected):
                read_stream(bytes(corrupt))


def test_v5_malformed_fields() -> None:
    with pytest.raises(HeaderError, match="size fields are malformed"):
        read_stream(b"SSVC" + bytes([5, 0, 0x13]) + FP8 + b"\x00\x00" + b"\x80" * 6 + bytes(8))
    # a size not in its shortest form is refused, so every stream has one encoding
    body = b"SSVC" + bytes([5, 3, 0x13]) + FP8 + b"\x7d\x00" + b"\xc6\x00" + b"\x32"
    with pytest.raises(HeaderError, match="size fields are malformed"):
        read_stream(body + zlib.crc32(body).to_bytes(4, "little"))
    with pytest.raises(HeaderError, match="tiled stream needs both sides"):
        read_stream(raw_header_v5(packed=0x80 | 0x13, tile=(0, 0)))
    with pytest.raises(HeaderError, match="half tiled|both sides"):
        read_stream(raw_header_v5(tile=(16, 0)))
    with pytest.raises(HeaderError, match="channels"):
        read_stream(raw_header_v5(channels=2))
    with pytest.raises(HeaderError, match="8 bytes in format version 5"):
        write_stream(make_header_v5(fingerprint=FP), [])
    head = b"\x10" + b"\x80" * 5 + b"\x00"
    with pytest.raises(ChunkCRCError, match="chunk 0 at byte 23: the chunk head is malformed"):
        read_stream(raw_header_v5() + head + bytes(10))
    with pytest.raises(ChunkError, match="unknown type 5"):
        read_stream(raw_header_v5() + raw_chunk_v5(5, 0))
    with pytest.raises(ChunkError, match="tile index 1, but the image has 1 tile"):
        read_stream(raw_header_v5() + raw_chunk_v5(1, 0, tile=1))
    with pytest.raises(ChunkError, match="over the"):
        read_stream(raw_header_v5() + raw_chunk_v5(1, 0, length=bs.MAX_PAYLOAD + 1)[:9])


def test_v5_weights_check_uses_the_stored_bytes() -> None:
    header = read_header(write_stream(make_header_v5(), []))
    assert header.fingerprint == FP8 == bs.stream_fingerprint(FP) and bs.fingerprint_size(4) == 16
    check_weights(header, FP)
    with pytest.raises(WeightsMismatch, match=FP8.hex()):
        check_weights(header, fingerprint(b"other"))


@pytest.mark.timeout(60)
def test_v5_fuzz_only_bitstream_errors() -> None:
    rng = np.random.default_rng(20261203)
    bases = [write_stream(make_header_v5(), make_chunks()),
             write_stream(make_header_v5(tile_height=64, tile_width=32, levels=1),
                          [Chunk(ChunkType.U, 0, b"a", tile=t) for t in range(4)] + [Chunk(ChunkType.X, 2, b"xyz")])]
    outcomes: dict[str, int] = {}
    for i in range(3000):
        data = bytearray(_mutate(rng, bases[i % 2]))
        if rng.random() < 0.3 and len(data) > 4:
            data[4] = 5                             # keep it a version-5 stream more often
        if rng.random() < 0.2:                      # a random compact chunk with valid checks
            data += raw_chunk_v5(int(rng.integers(0, 6)), int(rng.integers(0, 5)), bytes(int(rng.integers(0, 4))),
                                 tile=int(rng.integers(0, 3)))
        try:
            parsed = read_stream(bytes(data))
        except BitstreamError as error:
            assert "\n" not in str(error) and str(error)
            outcomes[type(error).__name__] = outcomes.get(type(error).__name__, 0) + 1
            continue
        assert write_stream(parsed.header, parsed.chunks) == bytes(data[:parsed.valid_length])
        outcomes["ok"] = outcomes.get("ok", 0) + 1
    for name in ("ok", "BadMagic", "HeaderError", "ChunkError", "ChunkCRCError"):
        assert outcomes.get(name, 0) > 0, outcomes
