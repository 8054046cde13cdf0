"""The ssvcodec container: a versioned header, then length-prefixed chunks, each with its own CRC.

This module only lays out bytes. It knows nothing about models or entropy coding, and payloads
are opaque. ``docs/bitstream.md`` documents the format byte by byte. Version 5, written since
session 18, is the compact layout (sizes as LEB128 varints, an 8-byte weights fingerprint):

    stream = header (25 bytes untiled, 4 + 1 + 1 + 1 + 8 + 2 + varints + CRC-32) + chunk*
    chunk  = head (type|level byte, tile and length varints, CRC-16 of the head) + payload + CRC-32

versions 1-4 the fixed one:

    stream = header (42 bytes) + chunk*
    chunk  = head (type, level, tile, length, head CRC: 14 bytes) + payload + CRC (4 bytes)

The ``level`` of a chunk is the index of its variable in the hierarchy: ``u = z_0`` is level 0,
``z_k`` and ``y_k`` are level k, and ``x = y_{K+1}`` is level K+1. The progressive level of a
chunk is ``level + 1``. Writers put chunks in non-decreasing level order, so every prefix that
ends on a chunk boundary is a valid stream with fewer levels (see ``truncate_levels``).

Every problem the reader finds raises a ``BitstreamError`` with a one-line message. The one
exception is data that ends inside a chunk, which is not an error: the reader returns the whole
chunks before the cut and sets ``truncated=True``.
"""
from __future__ import annotations

import binascii
import enum
import hashlib
import math
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# --- format constants -----------------------------------------------------------------------
MAGIC = b"SSVC"
FORMAT_VERSION = 8                             # the newest version: version 7 with chroma planes in X payloads of JPEG-decoded pixels
PLANES_VERSION = 8                             # the first version whose X payloads may carry chroma planes (codec.jpeg_planes)
CALIBRATED_VERSION = 7                         # the first version whose Y and X payloads carry the head's per-image calibration
TABLED_VERSION = 6                             # the first version whose latent symbols are coded under per-scale tables
COMPACT_VERSION = 5                            # the first version with the compact (varint) layout
RD_VERSIONS = frozenset({2, 4, 5, 6, 7, 8})     # the rate-distortion model's versions the codec decodes
LOSSY_VERSION = 2                              # sessions 8-17's RD streams without Y or X chunks
EXACT_VERSION = 4                              # sessions 9-17's RD streams with Y or X chunks
FLOAT64_RENDER_VERSION = 3                     # session 8's Y/X streams (coded against a float64 render): parsed, no longer decoded
ELBO_VERSION = 1                               # the ELBO model's streams (sessions 1-7): parsed, no longer decoded
SUPPORTED_VERSIONS = frozenset({1, 2, 3, 4, 5, 6, 7, 8})  # the versions this module reads and writes

# --- validation limits (absurd values are errors, on write and on read) ---------------------
MAX_SIDE = 1 << 18                          # image height and width, pixels
MAX_PIXELS = 1 << 32                        # height * width
MAX_LEVELS = 8                              # K, the model's level count (0 = plain VAE)
MIN_TILE_SIDE = 16                          # a tiled stream's tile height and width, pixels
MAX_TILE_SIDE = 0xFFFF                      # largest value a u16 can hold
MAX_PAYLOAD = 1 << 31                       # bytes in one chunk payload
MIN_QUALITY, MAX_QUALITY = -327.68, 327.67     # stored as an i16 in hundredths
CHANNELS = (1, 3, 4)                        # grey, RGB, RGBA (describes the original only)
FINGERPRINT_SIZE = 16                       # versions 1-4
COMPACT_FINGERPRINT_SIZE = 8                # versions 5-6: the first 8 bytes of ``fingerprint``

# --- byte layout of versions 1-4 (all little-endian) ----------------------------------------
# magic, version, flags, channels, levels, fingerprint, height, width, tile_h, tile_w, quality
_HEADER_FIELDS = struct.Struct("<4sBBBB16sIIHHh")
_CHUNK_FIELDS = struct.Struct("<BBII")      # type, level, tile, payload length
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER_FIELDS.size + _CRC.size          # 42 (versions 1-4)
CHUNK_HEAD_SIZE = _CHUNK_FIELDS.size + _CRC.size       # 14 (versions 1-4)
CHUNK_OVERHEAD = CHUNK_HEAD_SIZE + _CRC.size           # 18 bytes around each payload (versions 1-4)

# --- byte layout of version 5 ----------------------------------------------------------------
# magic, version, flags, tiled|levels|channels, fingerprint, quality; then varints and the CRC
_COMPACT_FIELDS = struct.Struct("<4sBBB8sh")
_HEAD_CHECK = struct.Struct("<H")           # CRC-16 (binascii.crc_hqx) of a chunk head
_TILED_BIT = 0x80
_MAX_VARINT_BYTES = 5                       # a u32


# --- errors ---------------------------------------------------------------------------------
class BitstreamError(ValueError):
    """Base class of every error the container raises: the data is not a usable ssvcodec stream."""


class BadMagic(BitstreamError):
    """The data does not start with ``MAGIC``: it is not an ssvcodec file."""


class UnsupportedVersion(BitstreamError):
    """The header names a format version this reader does not know."""


class HeaderError(BitstreamError):
    """The header is truncated, fails its CRC, or holds absurd or invalid values."""


class ChunkError(BitstreamError):
    """A chunk head passed its CRC but is invalid: unknown type, or level, tile or length out of
    range, or a type the header's flags do not allow."""


class ChunkCRCError(BitstreamError):
    """A chunk's head or body failed its CRC check: the data is corrupted."""


class StreamOrderError(BitstreamError):
    """The chunks break the order rules: a level lower than the one before, or a repeated chunk."""


class WeightsMismatch(BitstreamError):
    """The stream was encoded with other model weights than the ones loaded."""


# --- data model -----------------------------------------------------------------------------
class ChunkType(enum.IntEnum):
    """Chunk type ids. They are stable: never renumber, never derive them from any ordering.

    0 is invalid; 5..255 are reserved for future format versions.
    """

    U = 1   # latent u (level 0)
    Z = 2   # latent z_k (level k, 1 <= k <= K)
    Y = 3   # lossless y_k (level k, 1 <= k <= K)
    X = 4   # lossless x (level K + 1)


class HeaderFlags(enum.IntFlag):
    """Header flag bits. Bits not named here are reserved: they must be 0 (else ``HeaderError``)."""

    NONE = 0
    Y_CHUNKS = 1    # the stream may hold Y chunks
    LOSSLESS = 2    # the stream may hold an X chunk (progressive-to-lossless)


_KNOWN_FLAGS = int(HeaderFlags.Y_CHUNKS | HeaderFlags.LOSSLESS)


@dataclass(frozen=True)
class Header:
    """Everything a decoder needs before the first chunk.

    Args:
        height, width: true image size in pixels, before any padding.
        channels: channels of the original image (1, 3 or 4). Informative only.
        levels: K, the model's level count (0 = plain VAE).
        quality: the quality knob. Must be a multiple of 0.01 in [-327.68, 327.67].
        fingerprint: the bytes identifying the model weights (see ``fingerprint``): 16 in
            versions 1-4, their first 8 from version 5 (``stream_fingerprint``).
        flags: ``HeaderFlags``.
        tile_height, tile_width: tile size in pixels; both 0 means the image is not tiled.
        version: format version: 8 (``FORMAT_VERSION``) for the rate-distortion model, as 7
            with a chroma-plane block in each X payload; 7 as 6
            with a calibration block in each Y and X payload (the codec's business); 6 in the
            compact layout, whose chunks are one latent per level (U for level 1, Z for the
            others) and, with the LOSSLESS flag, an X chunk per tile (the lossless head's), with
            Y_CHUNKS a Y chunk per tile; its latent payloads code symbols under per-scale tables
            (the codec's business; this module does not look inside payloads); 5 the same with a
            quantized Gaussian per symbol; 4 as 5 in the fixed layout; 2 as 4 without Y
            or X chunks; 3 as 4, coded against a float64 render (session 8); 1 for the ELBO
            model, which may add Y and X chunks.
    """

    height: int
    width: int
    channels: int
    levels: int
    quality: float
    fingerprint: bytes
    flags: HeaderFlags = HeaderFlags.NONE
    tile_height: int = 0
    tile_width: int = 0
    version: int = FORMAT_VERSION

    @property
    def tiled(self) -> bool:
        return self.tile_height > 0

    @property
    def tile_grid(self) -> tuple[int, int]:
        """(rows, columns) of tiles; (1, 1) when the image is not tiled."""
        if not self.tiled:
            return (1, 1)
        return (-(-self.height // self.tile_height), -(-self.width // self.tile_width))

    @property
    def n_tiles(self) -> int:
        rows, cols = self.tile_grid
        return rows * cols


@dataclass(frozen=True)
class Chunk:
    """One chunk: a coded variable of one level and one tile.

    Args:
        type: ``ChunkType``.
        level: hierarchy index of the variable: 0 for U, k for Z/Y (``z_k``, ``y_k``), K+1 for X.
        payload: opaque bytes (any bytes-like object; stored as ``bytes``).
        tile: tile index in raster order (row * columns + column); 0 when untiled.
    """

    type: ChunkType
    level: int
    payload: bytes = b""
    tile: int = 0

    def __post_init__(self) -> None:
        if self.type not in _TYPE_IDS:
            raise ChunkError(f"unknown chunk type {self.type!r} ({_KNOWN_TYPES})")
        object.__setattr__(self, "type", ChunkType(self.type))
        if not isinstance(self.payload, bytes):
            object.__setattr__(self, "payload", bytes(self.payload))

    @property
    def progressive_level(self) -> int:
        """The progressive level this chunk belongs to: ``level + 1`` (1 = u only)."""
        return self.level + 1

    @property
    def label(self) -> str:
        """A short human name, e.g. ``"Z level 2"`` or ``"Z level 2, tile 5"``."""
        return _label(self.type, self.level, self.tile)


@dataclass(frozen=True)
class ChunkSpan:
    """Where a chunk lies in the stream: ``offset`` of its first byte, ``size`` in bytes (head
    and CRC included), ``payload_size`` of them the payload's."""

    offset: int
    size: int
    payload_size: int


@dataclass(frozen=True)
class ParsedStream:
    """The result of ``read_stream``.

    ``chunks`` are the whole, CRC-valid chunks in stream order and ``spans[i]`` says where
    ``chunks[i]`` lies. ``truncated`` is True when the data ends inside a chunk; ``valid_length``
    is the length of the valid prefix (header plus whole chunks), ``header_size`` the header's.
    """

    header: Header
    chunks: list[Chunk]
    spans: list[ChunkSpan]
    truncated: bool
    valid_length: int
    header_size: int

    @property
    def max_level(self) -> int:
        """Highest progressive level with at least one chunk (0 when there are no chunks)."""
        return max((c.progressive_level for c in self.chunks), default=0)


_TYPE_IDS = frozenset(int(t) for t in ChunkType)
_KNOWN_TYPES = "known: " + ", ".join(f"{t.name}={int(t)}" for t in ChunkType)


def _label(ctype: ChunkType, level: int, tile: int) -> str:
    return f"{ctype.name} level {level}" + (f", tile {tile}" if tile else "")


# --- helpers --------------------------------------------------------------------------------
def fingerprint(data: bytes) -> bytes:
    """Weights fingerprint: the first 16 bytes of SHA-256 of ``data`` (e.g. the weights file)."""
    return hashlib.sha256(data).digest()[:FINGERPRINT_SIZE]


def fingerprint_size(version: int) -> int:
    """Bytes of the weights fingerprint a header of ``version`` holds."""
    return COMPACT_FINGERPRINT_SIZE if version >= COMPACT_VERSION else FINGERPRINT_SIZE


def stream_fingerprint(weights: bytes, version: int = FORMAT_VERSION) -> bytes:
    """What a header of ``version`` stores of the weights fingerprint ``weights`` (16 bytes)."""
    return bytes(weights)[:fingerprint_size(version)]


def check_weights(header: Header, expected: bytes) -> None:
    """Raise ``WeightsMismatch`` unless the stream was encoded with the weights ``expected``
    (their 16-byte fingerprint, compared over the bytes the header holds)."""
    expected = bytes(expected)[:len(header.fingerprint)]
    if header.fingerprint != expected:
        raise WeightsMismatch(
            f"this file was encoded with weights {header.fingerprint.hex()}, but the loaded "
            f"weights are {expected.hex()}: load the matching weights"
        )


# --- validation shared by writer and reader -------------------------------------------------
def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise HeaderError(f"{name} must be a Python int, got {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise HeaderError(f"{name} {value} is out of range {lo}..{hi}")


def _check_flags(flags: int) -> None:
    if flags & ~_KNOWN_FLAGS:
        raise HeaderError(f"flags 0x{flags:02x} set reserved bits "
                          f"(known bits: 0x{_KNOWN_FLAGS:02x})")


def _validate_header(h: Header) -> None:
    """Raise ``HeaderError`` if any header field is invalid or absurd."""
    _check_int("height", h.height, 1, MAX_SIDE)
    _check_int("width", h.width, 1, MAX_SIDE)
    if h.height * h.width > MAX_PIXELS:
        raise HeaderError(
            f"image of {h.height}x{h.width} pixels exceeds the limit of {MAX_PIXELS} pixels"
        )
    if not isinstance(h.channels, int) or isinstance(h.channels, bool) \
            or h.channels not in CHANNELS:
        raise HeaderError(f"channels {h.channels!r} must be one of {CHANNELS}")
    _check_int("level count K", h.levels, 0, MAX_LEVELS)
    q = h.quality
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q) \
            or not MIN_QUALITY <= q <= MAX_QUALITY or round(q * 100) / 100 != q:
        raise HeaderError(f"quality {q!r} must be a multiple of 0.01 in [{MIN_QUALITY}, {MAX_QUALITY}]")
    size = fingerprint_size(h.version)
    if not isinstance(h.fingerprint, bytes) or len(h.fingerprint) != size:
        raise HeaderError(f"weights fingerprint must be {size} bytes in format version {h.version}, "
                          f"got {h.fingerprint!r}")
    _check_int("flags", h.flags, 0, 0xFF)
    _check_flags(int(h.flags))
    if h.version == 2 and h.flags:
        raise HeaderError(f"flags 0x{int(h.flags):02x}: format version 2 (rate-distortion model) "
                          "has no Y or X chunks")
    if (h.tile_height == 0) != (h.tile_width == 0):
        raise HeaderError(
            f"tile size {h.tile_height}x{h.tile_width}: both sides must be 0 (untiled) or neither"
        )
    if h.tile_height or h.tile_width:
        _check_int("tile height", h.tile_height, MIN_TILE_SIDE, MAX_TILE_SIDE)
        _check_int("tile width", h.tile_width, MIN_TILE_SIDE, MAX_TILE_SIDE)


def _level_range(ctype: ChunkType, k: int) -> tuple[int, int]:
    if ctype is ChunkType.U:
        return (0, 0)
    if ctype is ChunkType.X:
        return (k + 1, k + 1)
    return (1, k)


def _validate_chunk_head(h: Header, where: str, type_id: int, level: int, tile: int,
                         length: int) -> ChunkType:
    """Raise ``ChunkError`` if a chunk head does not fit the header; return its type."""
    if type_id not in _TYPE_IDS:
        raise ChunkError(
            f"{where} has unknown type {type_id} ({_KNOWN_TYPES}): "
            "the file needs a newer ssvcodec or is corrupted"
        )
    ctype = ChunkType(type_id)
    lo, hi = _level_range(ctype, h.levels)
    if not isinstance(level, int) or not lo <= level <= hi:
        expected = f"{lo}" if lo == hi else f"{lo}..{hi}" if lo <= hi else "none (K = 0)"
        raise ChunkError(f"{where} is a {ctype.name} chunk of level {level!r}, "
                         f"but with K = {h.levels} its level must be {expected}")
    if ctype is ChunkType.Y and not h.flags & HeaderFlags.Y_CHUNKS:
        raise ChunkError(f"{where} is a Y chunk, but the header's Y_CHUNKS flag is not set")
    if ctype is ChunkType.X and not h.flags & HeaderFlags.LOSSLESS:
        raise ChunkError(f"{where} is an X chunk, but the header's LOSSLESS flag is not set")
    if not isinstance(tile, int) or not 0 <= tile < h.n_tiles:
        raise ChunkError(f"{where} has tile index {tile!r}, but the image has {h.n_tiles} tile(s)")
    if length > MAX_PAYLOAD:
        raise ChunkError(f"{where} claims a payload of {length} bytes, "
                         f"over the {MAX_PAYLOAD}-byte limit")
    return ctype


class _OrderCheck:
    """Enforces non-decreasing levels and at most one chunk per (type, level, tile)."""

    def __init__(self) -> None:
        self.level = 0
        self.seen: set[tuple[int, int, int]] = set()

    def __call__(self, where: str, ctype: ChunkType, level: int, tile: int) -> None:
        label = _label(ctype, level, tile)
        if level < self.level:
            raise StreamOrderError(f"{where} ({label}) comes after a chunk of level {self.level}: "
                                   "chunks must be in non-decreasing level order")
        key = (int(ctype), level, tile)
        if key in self.seen:
            raise StreamOrderError(f"{where} ({label}) repeats an earlier chunk")
        self.level = level
        self.seen.add(key)


# --- varints (LEB128, unsigned, at most 5 bytes, shortest form only) --------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Short(Exception):
    """The data ends inside a field."""


class _Malformed(Exception):
    """A varint longer than 5 bytes, above 2^32 - 1, or not in its shortest form."""


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it)."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(view):
            raise _Short
        b = view[pos + i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if (i and b == 0) or value > 0xFFFFFFFF:
                raise _Malformed
            return value, pos + i + 1
    raise _Malformed


# --- writer ---------------------------------------------------------------------------------
def _encode_header(h: Header) -> bytes:
    if h.version >= COMPACT_VERSION:
        packed = (_TILED_BIT if h.tiled else 0) | h.levels << 3 | h.channels
        fields = _COMPACT_FIELDS.pack(MAGIC, h.version, int(h.flags), packed, h.fingerprint,
                                      round(h.quality * 100)) + _varint(h.height) + _varint(h.width)
        if h.tiled:
            fields += _varint(h.tile_height) + _varint(h.tile_width)
    else:
        fields = _HEADER_FIELDS.pack(MAGIC, h.version, int(h.flags), h.channels, h.levels,
                                     h.fingerprint, h.height, h.width, h.tile_height, h.tile_width,
                                     round(h.quality * 100))
    return fields + _CRC.pack(zlib.crc32(fields))


def _encode_chunk_head(version: int, chunk: Chunk) -> bytes:
    if version >= COMPACT_VERSION:
        head = bytes([int(chunk.type) << 4 | chunk.level]) + _varint(chunk.tile) + _varint(len(chunk.payload))
        return head + _HEAD_CHECK.pack(binascii.crc_hqx(head, 0))
    head = _CHUNK_FIELDS.pack(int(chunk.type), chunk.level, chunk.tile, len(chunk.payload))
    return head + _CRC.pack(zlib.crc32(head))


def write_stream(header: Header, chunks: Iterable[Chunk]) -> bytes:
    """Serialize ``header`` and ``chunks``, checking every rule the reader checks.

    Raises ``HeaderError``, ``ChunkError`` or ``StreamOrderError`` (all ``BitstreamError``) on
    invalid input, so whatever this returns, ``read_stream`` accepts.
    """
    if header.version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(f"this writer writes format versions "
                                 f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))}, not {header.version}")
    _validate_header(header)
    parts = [_encode_header(header)]
    order = _OrderCheck()
    for index, chunk in enumerate(chunks):
        where = f"chunk {index}"
        _validate_chunk_head(header, where, int(chunk.type), chunk.level, chunk.tile,
                             len(chunk.payload))
        order(where, chunk.type, chunk.level, chunk.tile)
        head = _encode_chunk_head(header.version, chunk)
        crc = zlib.crc32(chunk.payload, zlib.crc32(head))
        parts += [head, chunk.payload, _CRC.pack(crc)]
    return b"".join(parts)


# --- reader ---------------------------------------------------------------------------------
def read_header(data: bytes | bytearray | memoryview) -> Header:
    """Parse and validate the header at the start of ``data`` (the chunks are not looked at)."""
    return _read_header(memoryview(data).cast("B"))[0]


def _read_header(view: memoryview) -> tuple[Header, int]:
    """The header and its size in bytes."""
    n = len(view)
    if n < len(MAGIC):
        if n == 0:
            raise HeaderError("empty input: not an ssvcodec file")
        if bytes(view) != MAGIC[:n]:
            raise BadMagic(f"not an ssvcodec file (bad magic {bytes(view)!r})")
    elif bytes(view[:4]) != MAGIC:
        raise BadMagic(f"not an ssvcodec file (bad magic {bytes(view[:4])!r})")
    if n > 4 and view[4] not in SUPPORTED_VERSIONS:
        version = view[4]
        hint = "a newer ssvcodec is needed" if version > FORMAT_VERSION else "the file is corrupted"
        raise UnsupportedVersion(
            f"unsupported ssvcodec format version {version} (this reader supports "
            f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))}): {hint}"
        )
    if n > 4 and view[4] >= COMPACT_VERSION:
        return _read_compact_header(view)
    if n < HEADER_SIZE:
        raise HeaderError(f"truncated header: {n} of {HEADER_SIZE} bytes")
    (crc,) = _CRC.unpack_from(view, _HEADER_FIELDS.size)
    if zlib.crc32(view[:_HEADER_FIELDS.size]) != crc:
        raise HeaderError("the header failed its CRC check: the file is corrupted")
    (_, version, flags, channels, levels, fp, height, width, tile_h, tile_w,
     quality) = _HEADER_FIELDS.unpack_from(view, 0)
    _check_flags(flags)
    header = Header(height=height, width=width, channels=channels, levels=levels,
                    quality=quality / 100, fingerprint=fp, flags=HeaderFlags(flags),
                    tile_height=tile_h, tile_width=tile_w, version=version)
    _validate_header(header)
    return header, HEADER_SIZE


def _read_compact_header(view: memoryview) -> tuple[Header, int]:
    n = len(view)
    try:
        if n < _COMPACT_FIELDS.size:
            raise _Short
        _, version, flags, packed, fp, quality = _COMPACT_FIELDS.unpack_from(view, 0)
        height, pos = _read_varint(view, _COMPACT_FIELDS.size)
        width, pos = _read_varint(view, pos)
        tile_h = tile_w = 0
        if packed & _TILED_BIT:
            tile_h, pos = _read_varint(view, pos)
            tile_w, pos = _read_varint(view, pos)
        if n < pos + _CRC.size:
            raise _Short
    except _Short:
        raise HeaderError(f"truncated header: {n} bytes, short of its end") from None
    except _Malformed:
        raise HeaderError("the header's size fields are malformed: the file is corrupted") from None
    (crc,) = _CRC.unpack_from(view, pos)
    if zlib.crc32(view[:pos]) != crc:
        raise HeaderError("the header failed its CRC check: the file is corrupted")
    _check_flags(flags)
    if packed & _TILED_BIT and not (tile_h and tile_w):
        raise HeaderError(f"tile size {tile_h}x{tile_w}: a tiled stream needs both sides")
    header = Header(height=height, width=width, channels=packed & 7, levels=packed >> 3 & 15,
                    quality=quality / 100, fingerprint=fp, flags=HeaderFlags(flags),
                    tile_height=tile_h, tile_width=tile_w, version=version)
    _validate_header(header)
    return header, pos + _CRC.size


def _read_chunk_head(version: int, view: memoryview, pos: int, where: str) -> tuple[int, int, int, int, int]:
    """(type id, level, tile, payload length, position of the payload) of the chunk at ``pos``,
    its head checked; ``_Short`` if the data ends inside the head."""
    if version >= COMPACT_VERSION:
        if pos >= len(view):
            raise _Short
        try:
            tile, p = _read_varint(view, pos + 1)
            length, p = _read_varint(view, p)
        except _Malformed:
            raise ChunkCRCError(f"{where}: the chunk head is malformed: the file is corrupted") from None
        if len(view) < p + _HEAD_CHECK.size:
            raise _Short
        if binascii.crc_hqx(view[pos:p], 0) != _HEAD_CHECK.unpack_from(view, p)[0]:
            raise ChunkCRCError(f"{where}: the chunk head failed its CRC check: the file is corrupted")
        return view[pos] >> 4, view[pos] & 15, tile, length, p + _HEAD_CHECK.size
    if len(view) - pos < CHUNK_HEAD_SIZE:
        raise _Short
    type_id, level, tile, length = _CHUNK_FIELDS.unpack_from(view, pos)
    (head_crc,) = _CRC.unpack_from(view, pos + _CHUNK_FIELDS.size)
    if zlib.crc32(view[pos:pos + _CHUNK_FIELDS.size]) != head_crc:
        raise ChunkCRCError(f"{where}: the chunk head failed its CRC check: the file is corrupted")
    return type_id, level, tile, length, pos + CHUNK_HEAD_SIZE


def read_stream(data: bytes | bytearray | memoryview) -> ParsedStream:
    """Parse a whole stream, or the prefix of one.

    Returns every whole chunk. If the data ends inside a chunk (its head, payload or CRC), the
    chunks before it are returned with ``truncated=True``. Everything else that is wrong raises a
    ``BitstreamError``: a chunk that fails its CRC is never returned.
    """
    view = memoryview(data).cast("B")
    header, header_size = _read_header(view)
    n = len(view)
    pos = header_size
    chunks: list[Chunk] = []
    spans: list[ChunkSpan] = []
    order = _OrderCheck()
    truncated = False
    while pos < n:
        where = f"chunk {len(chunks)} at byte {pos}"
        try:
            type_id, level, tile, length, body = _read_chunk_head(header.version, view, pos, where)
        except _Short:
            truncated = True
            break
        ctype = _validate_chunk_head(header, where, type_id, level, tile, length)
        order(where, ctype, level, tile)
        end = body + length + _CRC.size
        if end > n:
            truncated = True
            break
        (crc,) = _CRC.unpack_from(view, end - _CRC.size)
        if zlib.crc32(view[pos:end - _CRC.size]) != crc:
            raise ChunkCRCError(f"{where} ({_label(ctype, level, tile)}) failed its CRC check: "
                                "the file is corrupted")
        chunks.append(Chunk(ctype, level, bytes(view[body:body + length]), tile))
        spans.append(ChunkSpan(pos, end - pos, length))
        pos = end
    return ParsedStream(header, chunks, spans, truncated, valid_length=pos, header_size=header_size)


def truncate_levels(data: bytes | bytearray | memoryview, levels: int) -> bytes:
    """The prefix of ``data`` with the header and every chunk of progressive level <= ``levels``.

    ``levels=0`` keeps the header only; a value past the last level keeps every whole chunk (a
    truncated tail is dropped). Raises ``BitstreamError`` if ``data`` is not a valid stream.
    """
    if not isinstance(levels, int) or levels < 0:
        raise ValueError(f"levels must be an integer >= 0, got {levels!r}")
    parsed = read_stream(data)
    end = parsed.header_size
    for chunk, span in zip(parsed.chunks, parsed.spans):
        if chunk.progressive_level > levels:
            break
        end = span.offset + span.size
    return bytes(memoryview(data).cast("B")[:end])


def level_ends(parsed: ParsedStream) -> dict[int, int]:
    """``{progressive level L: bytes a decoder reads for levels 1..L}`` (header included), i.e.
    ``len(truncate_levels(data, L))`` for every level present."""
    ends: dict[int, int] = {}
    for chunk, span in zip(parsed.chunks, parsed.spans):
        ends[chunk.progressive_level] = span.offset + span.size
    return dict(sorted(ends.items()))


def describe(parsed: ParsedStream) -> list[dict[str, Any]]:
    """One dict per chunk, for an ``info`` command.

    Keys: ``index``, ``type`` (name), ``level``, ``progressive_level``, ``tile``, ``offset``,
    ``payload_bytes`` and ``bytes`` (total, with the head and the CRC).
    """
    return [
        {"index": i, "type": c.type.name, "level": c.level,
         "progressive_level": c.progressive_level, "tile": c.tile,
         "offset": s.offset, "payload_bytes": s.payload_size, "bytes": s.size}
        for i, (c, s) in enumerate(zip(parsed.chunks, parsed.spans))
    ]
