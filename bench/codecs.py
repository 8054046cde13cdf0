"""Codecs for the rate-quality benchmark: one interface, classical anchors.

Every codec is a small subclass of :class:`Codec`::

    encode(img: uint8 HxWx3, q) -> bytes      # the whole file
    decode(data: bytes)         -> uint8 HxWx3
    operating_points(data, q)   -> [OperatingPoint]

``operating_points`` is what :mod:`bench.rd` measures.  A single-rate codec
returns one point (curve = codec name, ``n_bytes = len(data)``).  A progressive
codec returns one point per decodable prefix, each with the byte count that
prefix needs, and it may spread them over several named curves (the learned
codec: ``"ssvae/L1"``, ``"ssvae/L2+y"``, ...).

Codecs are registered by stable names (:data:`REGISTRY`, :func:`get_codec`)
with :func:`register`.  A codec whose library is missing says so through
:meth:`Codec.unavailable_reason`; :func:`get_codec` then raises
:class:`CodecUnavailable` instead of crashing a whole run.

Anchors (names -> library, settings):

=================  ==========================================================
``jpeg``           Pillow / libjpeg-turbo, 4:2:0, quality 5..95, no optimize
``jpeg444``        as ``jpeg`` with 4:4:4
``webp``           Pillow / libwebp lossy (4:2:0), quality 0..95, method 4
``webp-lossless``  Pillow / libwebp lossless, method 4 (Pillow quality=80)
``jpeg2000``       Pillow / OpenJPEG, raw .j2k codestream, 9/7 irreversible
                   wavelet + ICT (mct=1), one quality layer, sweep by target bpp
``jpeg2000-layers``  one .j2k codestream with several quality layers (LRCP)
                   decoded after each layer from the truncated prefix
``jpeg2000-lossless``  OpenJPEG 5/3 reversible wavelet + RCT (mct=1)
``avif``           Pillow / libavif (aom encoder), 4:2:0, speed 6, quality 5..90
``avif444``        as ``avif`` with 4:4:4
``jpegxl``         imagecodecs / libjxl, quality (``level``) 5..95, effort 7
``jpegxl-lossless``  imagecodecs / libjxl lossless
``png``            Pillow / libpng+zlib, compress_level 6 (Pillow default)
=================  ==========================================================
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


class CodecUnavailable(RuntimeError):
    """The library a codec needs is missing on this machine."""


@dataclass(frozen=True)
class OperatingPoint:
    """One measurable point of a codec on one image.

    Attributes:
        curve: name of the RD curve the point belongs to (e.g. ``"jpeg"``).
        key: identifies the setting across images (``"q=50"``, ``"L3"``);
            points with the same ``(curve, key)`` are averaged over images.
        n_bytes: bytes a decoder needs for this point (whole file or prefix).
        decode: decodes this point to a uint8 HxWx3 array (timed by bench.rd).
    """

    curve: str
    key: str
    n_bytes: int
    decode: Callable[[], np.ndarray]


class Codec(ABC):
    """A benchmarkable image codec.

    Class attributes:
        name: stable registry name (also the default curve name).
        qualities: default sweep of the quality argument ``q``.
        progressive: one bitstream decodes at several rates.
        lossless: decoding is bit-exact (one point, no RD curve).
        quality_label: how ``q`` is written in point keys.
    """

    name: ClassVar[str]
    qualities: ClassVar[tuple[Any, ...]] = ()
    progressive: ClassVar[bool] = False
    lossless: ClassVar[bool] = False
    quality_label: ClassVar[str] = "q"

    def __init__(self, threads: int = 1):
        self.threads = max(1, int(threads))

    # --- availability -----------------------------------------------------
    @classmethod
    def unavailable_reason(cls) -> str | None:
        """``None`` if usable here, else why not (e.g. a missing library)."""
        return None

    @classmethod
    def available(cls) -> bool:
        return cls.unavailable_reason() is None

    # --- coding -----------------------------------------------------------
    @abstractmethod
    def encode(self, img: np.ndarray, q: Any) -> bytes:
        """Encode a uint8 HxWx3 RGB image at setting ``q`` to a complete file."""

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decode a complete file to a uint8 HxWx3 RGB image."""

    def point_key(self, q: Any) -> str:
        return f"{self.quality_label}={q}"

    def operating_points(self, data: bytes, q: Any) -> list[OperatingPoint]:
        """Points measurable from one encoding (default: the whole file)."""
        return [OperatingPoint(self.name, self.point_key(q), len(data), lambda: self.decode(data))]


# --------------------------------------------------------------------------
# registry
REGISTRY: dict[str, type[Codec]] = {}


def register(cls: type[Codec]) -> type[Codec]:
    """Class decorator: register ``cls`` under ``cls.name`` (names are unique)."""
    name = cls.name
    if name in REGISTRY and REGISTRY[name] is not cls:
        raise ValueError(f"codec name {name!r} already registered by {REGISTRY[name].__name__}")
    REGISTRY[name] = cls
    return cls


def codec_names() -> list[str]:
    return list(REGISTRY)


def available_codecs() -> dict[str, str | None]:
    """``{name: None if available else reason}`` for every registered codec."""
    return {n: c.unavailable_reason() for n, c in REGISTRY.items()}


def get_codec(name: str, **kwargs: Any) -> Codec:
    """Instantiate a registered codec; ``KeyError`` for unknown names,
    :class:`CodecUnavailable` when its library is missing."""
    if name not in REGISTRY:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    reason = cls.unavailable_reason()
    if reason is not None:
        raise CodecUnavailable(f"{name}: {reason}")
    return cls(**kwargs)


# --------------------------------------------------------------------------
# helpers
def _as_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)


def _pil_feature(feature: str) -> str | None:
    try:
        from PIL import features
    except ImportError:  # pragma: no cover
        return "Pillow is not installed"
    try:
        ok = features.check(feature)
    except ValueError:
        ok = False
    return None if ok else f"Pillow was built without {feature} support"


def _pil_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


class PillowCodec(Codec):
    """Codec through ``PIL.Image.save`` / ``open``; subclasses give the options."""

    pil_format: ClassVar[str]
    pil_feature: ClassVar[str]

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _pil_feature(cls.pil_feature)

    def save_options(self, q: Any) -> dict[str, Any]:
        return {}

    def encode(self, img: np.ndarray, q: Any) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(_as_rgb(img), "RGB").save(buf, format=self.pil_format, **self.save_options(q))
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        return _pil_decode(data)


# --------------------------------------------------------------------------
# JPEG
@register
class JPEG(PillowCodec):
    name = "jpeg"
    pil_format = "JPEG"
    pil_feature = "jpg"
    qualities = (1, 2, 3, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)  # 1-3: low enough to meet the PSNR of the RS levels
    subsampling: ClassVar[str] = "4:2:0"

    def save_options(self, q: int) -> dict[str, Any]:
        return {"quality": int(q), "subsampling": self.subsampling, "optimize": False}


@register
class JPEG444(JPEG):
    name = "jpeg444"
    subsampling = "4:4:4"


# --------------------------------------------------------------------------
# WebP
@register
class WebP(PillowCodec):
    name = "webp"
    pil_format = "WEBP"
    pil_feature = "webp"
    qualities = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)

    def save_options(self, q: int) -> dict[str, Any]:
        return {"quality": int(q), "method": 4, "lossless": False}


@register
class WebPLossless(PillowCodec):
    name = "webp-lossless"
    pil_format = "WEBP"
    pil_feature = "webp"
    lossless = True
    qualities = (80,)  # in lossless mode Pillow's quality is the effort

    def save_options(self, q: int) -> dict[str, Any]:
        return {"lossless": True, "quality": int(q), "method": 4, "exact": True}


# --------------------------------------------------------------------------
# PNG
@register
class PNG(PillowCodec):
    name = "png"
    pil_format = "PNG"
    pil_feature = "zlib"
    lossless = True
    qualities = (6,)
    quality_label = "level"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None  # PNG is built into Pillow (needs zlib, which Pillow requires)

    def save_options(self, q: int) -> dict[str, Any]:
        return {"compress_level": int(q)}


# --------------------------------------------------------------------------
# AVIF
@register
class AVIF(PillowCodec):
    name = "avif"
    pil_format = "AVIF"
    pil_feature = "avif"
    qualities = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90)
    subsampling: ClassVar[str] = "4:2:0"
    speed: ClassVar[int] = 6

    @classmethod
    def unavailable_reason(cls) -> str | None:
        reason = _pil_feature("avif")
        if reason is not None:
            return reason
        try:
            from PIL import _avif

            if not any(_avif.encoder_codec_available(c) for c in ("aom", "rav1e", "svt")):
                return "Pillow's libavif has no AV1 encoder"
        except Exception:  # pragma: no cover - older Pillow layouts
            pass
        return None

    def save_options(self, q: int) -> dict[str, Any]:
        return {"quality": int(q), "subsampling": self.subsampling, "speed": self.speed, "max_threads": self.threads}


@register
class AVIF444(AVIF):
    name = "avif444"
    subsampling = "4:4:4"


# --------------------------------------------------------------------------
# JPEG XL
def _jxl_reason() -> str | None:
    try:
        import imagecodecs
    except ImportError:
        return "imagecodecs is not installed"
    if not getattr(getattr(imagecodecs, "JPEGXL", None), "available", False):
        return "imagecodecs was built without JPEG XL (libjxl)"
    return None


@register
class JPEGXL(Codec):
    name = "jpegxl"
    qualities = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
    effort: ClassVar[int] = 7

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _jxl_reason()

    def encode(self, img: np.ndarray, q: int) -> bytes:
        import imagecodecs

        return bytes(imagecodecs.jpegxl_encode(_as_rgb(img), level=int(q), effort=self.effort, numthreads=self.threads))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        out = imagecodecs.jpegxl_decode(data, numthreads=self.threads)
        if out.dtype != np.uint8:
            raise ValueError(f"JPEG XL decoded to {out.dtype}, expected uint8")
        return out


@register
class JPEGXLLossless(JPEGXL):
    name = "jpegxl-lossless"
    lossless = True
    qualities = (100,)

    def encode(self, img: np.ndarray, q: int = 100) -> bytes:
        import imagecodecs

        return bytes(imagecodecs.jpegxl_encode(_as_rgb(img), lossless=True, effort=self.effort, numthreads=self.threads))


# --------------------------------------------------------------------------
# JPEG 2000
JPEG2000_BPPS = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0)


def _ratio(img: np.ndarray, target_bpp: float) -> float:
    """OpenJPEG's "rates" are compression ratios w.r.t. the raw 8-bit samples."""
    return 8.0 * img.shape[2] / float(target_bpp)


@register
class JPEG2000(PillowCodec):
    """JPEG 2000 (OpenJPEG via Pillow), raw ``.j2k`` codestream (no JP2 boxes),
    irreversible 9/7 wavelet with the colour transform (``mct=1``: Pillow's
    default is 0, which codes R, G, B independently and costs ~3-7 dB), one
    quality layer; ``q`` is the target bpp."""

    name = "jpeg2000"
    pil_format = "JPEG2000"
    pil_feature = "jpg_2000"
    qualities = JPEG2000_BPPS
    quality_label = "bpp"

    def encode(self, img: np.ndarray, q: float) -> bytes:
        from PIL import Image

        img = _as_rgb(img)
        buf = io.BytesIO()
        Image.fromarray(img, "RGB").save(
            buf, format="JPEG2000", no_jp2=True, irreversible=True, mct=1,
            quality_mode="rates", quality_layers=[_ratio(img, q)],
        )
        return buf.getvalue()


@register
class JPEG2000Lossless(JPEG2000):
    name = "jpeg2000-lossless"
    lossless = True
    qualities = (0,)

    def encode(self, img: np.ndarray, q: float = 0) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(_as_rgb(img), "RGB").save(buf, format="JPEG2000", no_jp2=True, irreversible=False, mct=1)
        return buf.getvalue()


# --- codestream parsing for quality layers --------------------------------
@dataclass(frozen=True)
class J2KLayout:
    """Where the quality layers of a single-tile LRCP ``.j2k`` stream end.

    Attributes:
        n_layers: quality layers (from COD).
        sot: offset of the SOT marker of the only tile-part.
        plt_spans: ``(start, end)`` byte ranges of the PLT marker segments.
        layer_end: ``layer_end[k]`` = file offset just after the last packet
            of layer ``k + 1`` (from the PLT packet lengths).
    """

    n_layers: int
    sot: int
    plt_spans: tuple[tuple[int, int], ...]
    layer_end: tuple[int, ...]


def _u16(d: bytes, i: int) -> int:
    return int.from_bytes(d[i : i + 2], "big")


def parse_j2k_layers(data: bytes) -> J2KLayout:
    """Locate quality-layer boundaries in a codestream written with PLT markers.

    Requires: raw codestream (SOC first), one tile with one tile-part, LRCP
    progression, PLT marker(s) in the tile-part header (Pillow ``plt=True``).
    Packets per layer = (number of PLT entries) / layers.
    """
    if data[:2] != b"\xff\x4f":
        raise ValueError("not a raw JPEG 2000 codestream (no SOC)")
    i, n_layers, progression, sot = 2, None, None, None
    lengths: list[int] = []
    spans: list[tuple[int, int]] = []
    while i + 4 <= len(data):
        marker = _u16(data, i)
        if marker == 0xFF93:  # SOD: packet data follows
            break
        seg = _u16(data, i + 2)
        body = data[i + 4 : i + 2 + seg]
        if marker == 0xFF52:  # COD: Scod, SGcod = progression(1) layers(2) mct(1)
            progression, n_layers = body[1], _u16(body, 2)
        elif marker == 0xFF90:  # SOT
            if sot is not None:
                raise ValueError("more than one tile-part is not supported")
            sot = i
        elif marker == 0xFF58:  # PLT: Zplt, then 7-bit varints
            spans.append((i, i + 2 + seg))
            v = 0
            for byte in body[1:]:
                v = (v << 7) | (byte & 0x7F)
                if not byte & 0x80:
                    lengths.append(v)
                    v = 0
        i += 2 + seg
    else:
        raise ValueError("no SOD marker found")
    if n_layers is None or sot is None:
        raise ValueError("missing COD or SOT marker")
    if progression != 0:
        raise ValueError(f"progression order {progression} is not LRCP")
    if not lengths or len(lengths) % n_layers:
        raise ValueError("no usable PLT marker (encode with plt=True)")
    start = i + 2
    if start + sum(lengths) + 2 != len(data):
        raise ValueError("PLT packet lengths do not add up to the tile data")
    per = len(lengths) // n_layers
    cum = np.cumsum(lengths)
    ends = tuple(int(start + cum[(k + 1) * per - 1]) for k in range(n_layers))
    return J2KLayout(n_layers, sot, tuple(spans), ends)


def truncate_j2k(data: bytes, k: int, layout: J2KLayout | None = None) -> bytes:
    """The codestream a decoder needs for quality layers ``1..k``.

    Main header + tile-part header *without* the PLT markers + the packets of
    layers ``1..k`` + EOC; the tile-part length ``Psot`` is rewritten.  The
    packet data are byte-identical to an encoding without ``plt=True``, so
    ``truncate_j2k(data, n_layers)`` is the file an encoder without PLT would
    have written, and smaller ``k`` give exactly the prefixes of that file
    (plus the 2-byte EOC) that a progressive decoder would receive.
    """
    layout = layout or parse_j2k_layers(data)
    if not 1 <= k <= layout.n_layers:
        raise ValueError(f"layer {k} not in 1..{layout.n_layers}")
    out = bytearray()
    pos = 0
    for a, b in layout.plt_spans:
        out += data[pos:a]
        pos = b
    out += data[pos : layout.layer_end[k - 1]]
    psot = len(out) - layout.sot
    out += b"\xff\xd9"
    out[layout.sot + 6 : layout.sot + 10] = psot.to_bytes(4, "big")
    return bytes(out)


@register
class JPEG2000Layers(Codec):
    """Progressive JPEG 2000: one codestream with quality layers.

    One encoding per image holds ``len(q)`` quality layers at the target bpps
    ``q`` (default :data:`JPEG2000_BPPS`), LRCP progression, 9/7 wavelet + ICT
    (``mct=1``, as :class:`JPEG2000`), raw
    ``.j2k`` with PLT (packet length) markers.  Point ``Lk@<bpp>`` is what a decoder
    can show after receiving layer ``k``: the codestream truncated after the
    packets of layer ``k`` plus a 2-byte EOC (:func:`truncate_j2k`), decoded by
    OpenJPEG; its bpp counts exactly those bytes.  The encoder writes PLT
    (packet length) markers only so that the layer boundaries can be found;
    they are removed from every measured stream (not counted), which is what
    an encoder without PLT would have produced.  ``encode`` returns the stream
    with PLT (input to :meth:`operating_points`, :meth:`decode_layer`).
    """

    name = "jpeg2000-layers"
    progressive = True
    qualities = (JPEG2000_BPPS,)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _pil_feature("jpg_2000")

    def point_key(self, q: Any) -> str:
        return "layers=" + ",".join(f"{r:g}" for r in q)

    def encode_layers(self, img: np.ndarray, rates_bpp: Sequence[float]) -> bytes:
        from PIL import Image

        img = _as_rgb(img)
        rates = sorted(float(r) for r in rates_bpp)
        buf = io.BytesIO()
        Image.fromarray(img, "RGB").save(
            buf, format="JPEG2000", no_jp2=True, irreversible=True, mct=1, plt=True, progression="LRCP",
            quality_mode="rates", quality_layers=[_ratio(img, r) for r in rates],
        )
        return buf.getvalue()

    def encode(self, img: np.ndarray, q: Sequence[float] = JPEG2000_BPPS) -> bytes:
        return self.encode_layers(img, q)

    def num_layers(self, data: bytes) -> int:
        return parse_j2k_layers(data).n_layers

    def layer_nbytes(self, data: bytes, k: int) -> int:
        """Bytes needed to decode the first ``k`` layers (without PLT, + EOC)."""
        return len(truncate_j2k(data, k))

    def decode_layer(self, data: bytes, k: int) -> np.ndarray:
        """Decode the codestream truncated after layer ``k`` (1-based)."""
        return _pil_decode(truncate_j2k(data, k))

    def decode(self, data: bytes) -> np.ndarray:
        return _pil_decode(data)

    def operating_points(self, data: bytes, q: Any) -> list[OperatingPoint]:
        layout = parse_j2k_layers(data)
        targets = sorted(float(r) for r in q)
        if len(targets) != layout.n_layers:
            raise ValueError(f"{len(targets)} target rates but {layout.n_layers} layers in the stream")
        points = []
        for k in range(1, layout.n_layers + 1):
            prefix = truncate_j2k(data, k, layout)
            key = f"L{k}@{targets[k - 1]:g}"
            points.append(OperatingPoint(self.name, key, len(prefix), lambda p=prefix: _pil_decode(p)))
        return points
