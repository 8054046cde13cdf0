"""The Y and X chunks: one tile of x coded losslessly given the RD model's final render, with
the lossless head (:mod:`models.lossless`; Mentzer et al. 2020 code x given a lossy
reconstruction the same way). A Y chunk holds the head's coarse stages (y = x[::2, ::2], the
conditional reconstruction's input), an X chunk the rest (or, without Y, all of x).

Both sides run the head's own coding order (:meth:`models.lossless.LosslessHead.walk`) with the
head in integer arithmetic that float32 computes exactly (:mod:`models.exact_head`), on the
render the RD model's exact path drew (``RDTileCoder.encode(final_render=True)``), and snap
every mean and scale to the head's grids, so the coder's parameters do not depend on the thread
count or the CPU kind. Each sub-pixel is a quantized Laplace on 0..255
(:meth:`codec.entropy.ChunkEncoder.laplace`).

Any tile: the head sees the padded render, x is the render outside the tile's true pixels (so
those cost nothing and are not coded), a grey image codes its one channel as R (G and B equal it),
and an alpha plane travels beside it as a PNG (lossless; alpha is rarely photographic).

Near-lossless (``max_error`` N > 0): each colour sample is reconstructed within N of the
original by coding its residual quantized with step 2N+1 under the same head; the later stages
condition on the reconstruction.

JPEG-decoded pixels (format version 8, X chunks of RGB tiles coded exactly without Y): the X
payload carries a Cb and a Cr plane under which each pixel's G and B follow from its R
(:mod:`codec.jpeg_planes`); the head then codes R everywhere and G and B only where they do not
follow (R clamped, or a pixel the planes mark).

Payload: ``[8 bytes: head fingerprint][u8 N][u32 crc32 of the tile's decoded pixels (h, w, C);
Y: of y][u32 A][A bytes: the alpha plane as PNG, X with C = 4 only][format version 8, X only:
u8 P; P = 1: u32 J, J bytes: the chroma planes (:func:`codec.jpeg_planes.encode`)][format version 7: the
calibration block (:mod:`codec.calibration`)][range-coded sub-pixels]``. A wrong head,
a wrong checksum or bad data raises :class:`~codec.rd_coder.DesyncError`. From version 7 the
encoder runs the head's walk once, recording every coded (stage, channel), fits the chunk's
calibration, then codes what it recorded under the calibrated means and scales.
"""
from __future__ import annotations

import copy
import io
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..models.exact_head import ExactLosslessHead
from ..models.lossless import LosslessHead, to_phases

from . import calibration, jpeg_planes
from .bitstream import CALIBRATED_VERSION, FORMAT_VERSION, PLANES_VERSION
from .entropy import ChunkDecoder, ChunkEncoder, EntropyDecodeError
from .images import EmbeddedImageError, embedded_image
from .rd_coder import DesyncError, LevelRender

HEAD_FINGERPRINT_SIZE = 8
MAX_ERROR = 64                      # the largest near-lossless bound
_PREFIX = struct.Struct("<BII")  # max error, crc32 of the decoded pixels, alpha length
_LENGTH = struct.Struct("<I")


@dataclass
class _Part:
    """What the walk does with one chunk's stages: ``coder`` an encoder (the values are recorded,
    coded after the walk), a decoder, a reconstruction that already holds them (Y only), or None
    (the head's rounded means stand in: the CR image); ``step`` the quantization step (1: exact);
    ``table`` the calibration rows (n, 2, N_BANDS) a decoder applies, in coding order;
    ``planes`` the padded chroma planes Cb, Cr and mask (1, 1, H, W) that G and B follow from
    (:mod:`codec.jpeg_planes`; X only)."""

    coder: ChunkEncoder | ChunkDecoder | Tensor | None
    step: int = 1
    table: np.ndarray | None = None
    planes: tuple[Tensor, Tensor, Tensor] | None = None
    calls: int = 0
    recorded: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)

    def row(self) -> np.ndarray | None:
        """The calibration row of the next coded (stage, channel)."""
        j, self.calls = self.calls, self.calls + 1
        if self.table is None or len(self.table) == 0:
            return None
        if j >= len(self.table):
            raise DesyncError(f"calibration block has {len(self.table)} rows, the chunk codes more")
        return self.table[j]


class LosslessTileCoder:
    """Code one tile's true pixels given its padded final render."""

    def __init__(self, head: LosslessHead, fingerprint: bytes) -> None:
        """``fingerprint``: the head's weights fingerprint (its first 8 bytes go in each chunk)."""
        self.head = ExactLosslessHead(copy.deepcopy(head).cpu())
        self.fingerprint = fingerprint[:HEAD_FINGERPRINT_SIZE]

    @property
    def multiple(self) -> int:
        """The padded render's sides must be multiples of this."""
        return self.head.multiple

    @torch.no_grad()
    def encode(self, pixels: np.ndarray, render: LevelRender, q: float, max_error: int = 0, with_y: bool = False,
               lossless: bool = True, version: int = FORMAT_VERSION) -> tuple[bytes | None, bytes | None]:
        """``pixels``: the tile (h, w, C) uint8, C in 1 (grey), 3 (RGB), 4 (RGBA); ``render``: the
        padded final render (3, H, W) uint8, H >= h, W >= w, with its features (drawn by the exact
        path: ``RDTileCoder.encode(final_render=True)``) -> the payloads of the tile's Y chunk
        (``with_y``: y = x[::2, ::2] exactly, the head's coarse stages) and X chunk
        (``lossless``: the rest of x, or all of it without Y), None for a chunk not asked for.
        ``max_error`` N > 0: near-lossless X, every colour sample within N of the original (Y
        and alpha stay exact). ``version``: the stream's format version (from 7 each payload
        carries its calibration: :mod:`codec.calibration`)."""
        if not 0 <= max_error <= MAX_ERROR:
            raise ValueError(f"max error must be in 0..{MAX_ERROR}, got {max_error}")
        if with_y and self.head.config.depth < 1:
            raise ValueError("this lossless head has no coarse stages to code y with (depth 0)")
        h, w, ch = pixels.shape
        source = render.pixels.double().unsqueeze(0).clone()
        colour = torch.from_numpy(np.array(pixels[..., :3] if ch >= 3 else np.repeat(pixels, 3, 2)))  # a writable copy
        source[0, :, :h, :w] = colour.permute(2, 0, 1).double()
        parts = {"x": _Part(ChunkEncoder() if lossless else None, 2 * max_error + 1)}
        if with_y:
            parts["y"] = _Part(ChunkEncoder())
        planes = b""
        if version >= PLANES_VERSION and lossless and not max_error and not with_y and ch == 3:
            planes = jpeg_planes.encode(pixels) or b""
            if planes:  # the walk reads the planes as the decoder will
                parts["x"].planes = _padded_planes(jpeg_planes.decode(planes, (h, w)),
                                                   base_shape=tuple(render.pixels.shape[-2:]))
        x = self._walk(render, (h, w), ch, q, parts, source)
        blocks = {k: _finish(p, version >= CALIBRATED_VERSION) for k, p in parts.items() if p.coder is not None}
        y_payload = x_payload = None
        if with_y:
            y_payload = self.fingerprint + _PREFIX.pack(0, _crc(self._subsample(x, (h, w), ch)), 0) + blocks["y"]
        if lossless:
            decoded = self._pixels(x, (h, w), ch, pixels[..., 3] if ch == 4 else None)
            alpha = _png(pixels[..., 3]) if ch == 4 else b""
            x_payload = (self.fingerprint + _PREFIX.pack(max_error, _crc(decoded), len(alpha)) + alpha
                         + (_planes_block(planes) if version >= PLANES_VERSION else b"") + blocks["x"])
        return y_payload, x_payload

    @staticmethod
    def max_error(payload: bytes) -> int:
        """The near-lossless bound N of an X payload (0: lossless)."""
        if len(payload) < HEAD_FINGERPRINT_SIZE + _PREFIX.size:
            raise DesyncError("lossless chunk: payload too short")
        return int(payload[HEAD_FINGERPRINT_SIZE])

    @staticmethod
    def calibration_rows(payload: bytes, what: str = "X", version: int = FORMAT_VERSION) -> np.ndarray:
        """The calibration rows (n, 2, N_BANDS) of a Y or X payload (``what``) of format
        ``version`` >= 7 (n = 0: none)."""
        start, _ = _skip_planes(payload, what, version)
        try:
            return calibration.unpack(payload, start)[0]
        except calibration.CalibrationError as e:
            raise DesyncError(f"lossless chunk: {e}") from None

    @staticmethod
    def planes_size(payload: bytes, version: int = FORMAT_VERSION) -> int:
        """Bytes of the chroma planes in an X payload (0: none; :mod:`codec.jpeg_planes`)."""
        start, planes = _skip_planes(payload, "X", version)
        return len(planes)

    @torch.no_grad()
    def decode(self, y_payload: bytes | None, x_payload: bytes, render: LevelRender, size: tuple[int, int],
               channels: int, q: float, known: Tensor | None = None, version: int = FORMAT_VERSION) -> np.ndarray:
        """The tile's pixels (h, w, ``channels``) uint8 from its padded render (with its
        features, as :meth:`encode`) and its X payload,
        with its Y payload first if the stream has one. ``known``: the reconstruction that
        :meth:`reconstruct_given_y` returned for this tile; its Y stages are then taken from it,
        not decoded a second time (a progressive decode that showed the CR image first).
        ``version``: the stream's format version."""
        parts: dict[str, _Part] = {}
        y_open = self._open(y_payload, channels, "Y", version) if y_payload is not None and known is None else None
        if known is not None:
            parts["y"] = _Part(known)
        elif y_open is not None:
            parts["y"] = y_open[0]
        x_part, max_error, crc, alpha_data = self._open(x_payload, channels, "X", version, size,
                                                        tuple(render.pixels.shape[-2:]))
        parts["x"] = x_part
        x = self._walk(render, size, channels, q, parts, None)
        for k, p in parts.items():
            if p.table is not None and 0 < len(p.table) != p.calls:
                raise DesyncError(f"calibration block has {len(p.table)} rows, the {k.upper()} chunk codes {p.calls}")
        if y_open is not None:
            self._check_y(x, size, channels, y_open[2])
        alpha = _unpng(alpha_data, size) if channels == 4 else None
        pixels = self._pixels(x, size, channels, alpha)
        if _crc(pixels) != crc:
            raise DesyncError("lossless chunk: decoded pixels fail their checksum (corrupt or desynchronised stream)")
        return pixels

    @torch.no_grad()
    def reconstruct_given_y(self, y_payload: bytes, render: LevelRender, size: tuple[int, int], channels: int,
                            q: float, version: int = FORMAT_VERSION) -> tuple[np.ndarray, Tensor]:
        """The conditional reconstruction (CR) from the tile's Y payload: each sample not in y
        is the head's rounded mean given y and the render (h, w, colour channels) uint8; with the
        padded reconstruction (1, 3, H, W), whose Y stages :meth:`decode` can reuse."""
        y_part, _, crc, _ = self._open(y_payload, channels, "Y", version)
        x = self._walk(render, size, channels, q, {"y": y_part, "x": _Part(None)}, None)
        self._check_y(x, size, channels, crc)
        return self._pixels(x, size, min(channels, 3), None), x

    def _check_y(self, x: Tensor, size: tuple[int, int], channels: int, crc: int) -> None:
        if _crc(self._subsample(x, size, channels)) != crc:
            raise DesyncError("Y chunk: decoded samples fail their checksum (corrupt or desynchronised stream)")

    def _open(self, payload: bytes, channels: int, what: str, version: int, size: tuple[int, int] = (0, 0),
              base_shape: tuple[int, int] = (0, 0)) -> tuple[_Part, int, int, bytes]:
        """(the chunk's part: entropy decoder, step, calibration and, X only, chroma planes for a
        tile of ``size`` padded to ``base_shape``; max error, crc, alpha PNG bytes) of a Y or X
        payload, its prefix checked."""
        n = HEAD_FINGERPRINT_SIZE + _PREFIX.size
        label = "lossless chunk" if what == "X" else "Y chunk"
        if len(payload) < n:
            raise DesyncError(f"{label}: payload too short")
        if payload[:HEAD_FINGERPRINT_SIZE] != self.fingerprint:
            raise DesyncError(f"{label}: coded with lossless head {payload[:HEAD_FINGERPRINT_SIZE].hex()}, "
                              f"this decoder has {self.fingerprint.hex()}")
        max_error, crc, alpha_len = _PREFIX.unpack_from(payload, HEAD_FINGERPRINT_SIZE)
        if max_error > MAX_ERROR or (what == "Y" and max_error):
            raise DesyncError(f"{label}: max error {max_error} is not allowed")
        if n + alpha_len > len(payload) or (alpha_len > 0) != (channels == 4 and what == "X"):
            raise DesyncError(f"{label}: bad alpha length")
        start, table = n + alpha_len, None
        planes = None
        if version >= PLANES_VERSION and what == "X":
            start, data = _skip_planes(payload, what, version)
            if data:
                if channels != 3 or max_error:
                    raise DesyncError(f"{label}: chroma planes in a chunk that cannot have them")
                try:
                    planes = jpeg_planes.decode(data, size)
                except jpeg_planes.PlanesError as e:
                    raise DesyncError(f"{label}: {e}") from None
        if version >= CALIBRATED_VERSION:
            try:
                table, start = calibration.unpack(payload, start)
            except calibration.CalibrationError as e:
                raise DesyncError(f"{label}: {e}") from None
        try:
            dec = ChunkDecoder(payload[start:])
        except EntropyDecodeError as e:
            raise DesyncError(f"{label}: {e}") from None
        part = _Part(dec, 2 * max_error + 1, table)
        if planes is not None:
            part.planes = _padded_planes(planes, base_shape)
        return part, max_error, crc, payload[n:n + alpha_len]

    def _walk(self, render: LevelRender, size: tuple[int, int], channels: int, q: float,
              parts: dict[str, _Part], source: Tensor | None) -> Tensor:
        """The head's coding order over the tile. ``parts``: for "x" (and "y" if present: then
        the stages of scale d >= 1 are Y's, the others X's) what to do with them (:class:`_Part`;
        an encoder's part records the values, in ``source``, for :func:`_finish`). Returns the
        padded reconstruction (1, 3, H, W) float64.
        Outside the true pixels it is the render (not coded); for grey, G and B repeat R."""
        base = render.pixels.double().unsqueeze(0)
        mask = _mask(base.shape[-2:], *size)
        phases: dict[int, Tensor] = {}   # the render's phases at each scale
        truth: dict[int, Tensor] = {}
        first: dict[str, Tensor] = {}

        def code(d: int, ph: int, c: int, mean: Tensor, scale: Tensor) -> Tensor:
            if d not in phases:
                phases[d] = to_phases(base[..., ::2 ** d, ::2 ** d])
                if source is not None:
                    truth[d] = to_phases(source[..., ::2 ** d, ::2 ** d])
            m = _phase_mask(mask, d, ph)
            out = phases[d][:, ph, c].clone()
            if c > 0 and channels < 3:
                out[m] = first["r"][m]
                return out
            part = parts["y" if "y" in parts and d >= 1 else "x"]
            coder, step = part.coder, part.step
            if c > 0 and part.planes is not None:  # G and B follow from R where the planes allow
                follows, value = _follow(part.planes, d, ph, c, first)
                follows &= m
                if source is not None and not torch.equal(value[follows], truth[d][:, ph, c][follows]):
                    raise AssertionError("chroma planes do not give the pixels they were fitted to")
                out[follows] = value[follows]
                m = m & ~follows
            if isinstance(coder, ChunkEncoder):
                target = truth[d][:, ph, c][m]
                out[m] = _reconstruction(target, mean[m], step)
                part.recorded.append((target, mean[m], scale[m]))
            elif isinstance(coder, ChunkDecoder):
                out[m] = _decode_values(coder, mean[m], scale[m], step, part.row())
            elif isinstance(coder, Tensor):
                out[m] = to_phases(coder[..., ::2 ** d, ::2 ** d])[:, ph, c][m]
            elif source is not None:  # not coded here: the encoder knows the values
                out[m] = truth[d][:, ph, c][m]
            else:
                out[m] = torch.round(mean[m]).clamp(0, 255)
            first["rgb"[c]] = out
            return out

        return self.head.walk(base, torch.tensor([float(q)], dtype=torch.float64), code, snapped=True,
                              features=render.features)

    @staticmethod
    def _subsample(x: Tensor, size: tuple[int, int], channels: int) -> np.ndarray:
        """y = x[::2, ::2] of the tile's true pixels, (ceil(h/2), ceil(w/2), colour channels) uint8."""
        h, w = size
        y = x[0, :, :h:2, :w:2].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        return np.ascontiguousarray(y[..., :1] if channels < 3 else y)

    @staticmethod
    def _pixels(x: Tensor, size: tuple[int, int], channels: int, alpha: np.ndarray | None) -> np.ndarray:
        h, w = size
        colour = x[0, :, :h, :w].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        pixels = colour[..., :1] if channels < 3 else colour
        if alpha is not None:
            pixels = np.concatenate([pixels, alpha[..., None]], 2)
        return np.ascontiguousarray(pixels)


def _finish(part: _Part, calibrate: bool) -> bytes:
    """An encoder part's calibration block (``calibrate``: format version 7) and range-coded
    values: the calibration of each recorded (stage, channel) (:func:`codec.calibration.fit`),
    kept only if it saves more bits than the block costs."""
    assert isinstance(part.coder, ChunkEncoder)
    table = None
    if calibrate and part.recorded:
        fits = [calibration.fit(*_coded_symbols(t, m, part.step), s.numpy(), part.step) for t, m, s in part.recorded]
        if sum(saved for _, saved in fits) > 8 * (calibration.block_size(len(fits)) - 1):
            table = np.stack([row for row, _ in fits])
    for j, (target, mean, scale) in enumerate(part.recorded):
        _code_values(part.coder, target, mean, scale, part.step, None if table is None else table[j])
    return (calibration.pack(table) if calibrate else b"") + part.coder.finish()


def _skip_planes(payload: bytes, what: str, version: int) -> tuple[int, bytes]:
    """(where the calibration block starts, the chroma planes' bytes) of a Y or X payload."""
    n = HEAD_FINGERPRINT_SIZE + _PREFIX.size
    if len(payload) < n:
        raise DesyncError("lossless chunk: payload too short")
    start = n + _PREFIX.unpack_from(payload, HEAD_FINGERPRINT_SIZE)[2]
    if version < PLANES_VERSION or what != "X":
        return start, b""
    if start + 1 > len(payload) or payload[start] > 1:
        raise DesyncError("lossless chunk: bad chroma planes' flag")
    if payload[start] == 0:
        return start + 1, b""
    if start + 1 + _LENGTH.size > len(payload):
        raise DesyncError("lossless chunk: payload too short for its chroma planes' length")
    length = _LENGTH.unpack_from(payload, start + 1)[0]
    start += 1 + _LENGTH.size
    if length == 0 or start + length > len(payload):
        raise DesyncError("lossless chunk: bad chroma planes' length")
    return start + length, payload[start:start + length]


def _planes_block(planes: bytes) -> bytes:
    """An X payload's chroma-plane block (format version 8): a flag, then the planes' length and bytes."""
    return b"\x01" + _LENGTH.pack(len(planes)) + planes if planes else b"\x00"


def _follow(planes: tuple[Tensor, Tensor, Tensor], d: int, ph: int, c: int,
            known: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(where channel ``c`` (1: G, 2: B) of phase ``ph`` at scale ``d`` follows from the channels
    before it in ``known`` and the chroma planes, its values there) (:mod:`codec.jpeg_planes`)."""
    cb, cr, marked = (to_phases(p[..., ::2 ** d, ::2 ** d])[:, ph, 0].numpy() for p in planes)
    r = known["r"].numpy().astype(np.int64)
    if c == 1:
        follows, value = jpeg_planes.green(r, cb, cr)
    else:
        follows, value = jpeg_planes.blue(r, known["g"].numpy().astype(np.int64), cb, cr)
    return torch.from_numpy(follows & (marked == 0)), torch.from_numpy(value).double()


def _padded_planes(planes: tuple[np.ndarray, np.ndarray, np.ndarray],
                   base_shape: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Chroma planes Cb, Cr and mask of a tile (h, w) as (1, 1, H, W) tensors over the padded
    render (outside the tile: 0, and masked; those samples are not coded)."""
    out = []
    for k, plane in enumerate(planes):
        t = torch.full((1, 1, *base_shape[-2:]), k == 2, dtype=torch.int64)
        t[0, 0, :plane.shape[0], :plane.shape[1]] = torch.from_numpy(np.asarray(plane, dtype=np.int64))
        out.append(t)
    return out[0], out[1], out[2]


def _centre(mean: Tensor) -> Tensor:
    """Near-lossless: the integer the residuals are taken from, the head's mean rounded into 0..255."""
    return torch.round(mean).clamp(0, 255)


def _residual(target: Tensor, centre: Tensor, step: int) -> Tensor:
    """Near-lossless: the quantized residual symbol of ``target`` (no ties: the step is odd)."""
    return torch.round((target - centre) / step)


def _from_residual(centre: Tensor, sym: Tensor, step: int) -> Tensor:
    """Near-lossless: the sample a residual symbol reconstructs, within (step - 1) / 2 of the value."""
    return (centre + sym * step).clamp(0, 255)


def _coded_symbols(target: Tensor, mean: Tensor, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(symbols, means) as :func:`_code_values` codes them before calibration: the values
    themselves, or near-lossless the quantized residuals and the mean in step units."""
    if step == 1:
        return target.numpy(), mean.numpy()
    centre = _centre(mean)
    return _residual(target, centre, step).numpy(), ((mean - centre) / step).numpy()


def _reconstruction(target: Tensor, mean: Tensor, step: int) -> Tensor:
    """What the decoder will reconstruct of ``target`` (:func:`_code_values`)."""
    if step == 1:
        return target
    centre = _centre(mean)
    return _from_residual(centre, _residual(target, centre, step), step)


def _code_values(enc: ChunkEncoder, target: Tensor, mean: Tensor, scale: Tensor, step: int,
                 row: np.ndarray | None) -> None:
    """Code one phase channel's true values under the head's snapped ``mean`` and ``scale``
    calibrated by ``row`` (:func:`codec.calibration.apply`). ``step``
    2N+1 > 1: near-lossless, as JPEG-LS quantizes its residuals (Weinberger, Seroussi & Sapiro 2000): the residual from the
    nearest integer to the head's mean, divided by the step and rounded, under the calibrated Laplace
    rescaled by the step; the reconstruction (:func:`_reconstruction`) is within N of the value and
    does not depend on the calibration."""
    m, b = calibration.apply(mean, scale, row)
    if step == 1:
        enc.laplace(target.numpy().astype(np.int32), m.numpy(), b.numpy())
        return
    centre = _centre(mean)
    enc.residual_laplace(_residual(target, centre, step).numpy().astype(np.int32), ((m - centre) / step).numpy(),
                         (b / step).numpy())


def _decode_values(dec: ChunkDecoder, mean: Tensor, scale: Tensor, step: int, row: np.ndarray | None) -> Tensor:
    """The inverse of :func:`_code_values`."""
    m, b = calibration.apply(mean, scale, row)
    try:
        if step == 1:
            return torch.from_numpy(dec.laplace(m.numpy(), b.numpy())).double()
        centre = _centre(mean)
        sym = torch.from_numpy(dec.residual_laplace(((m - centre) / step).numpy(), (b / step).numpy())).double()
        return _from_residual(centre, sym, step)
    except EntropyDecodeError as e:
        raise DesyncError(f"lossless chunk: {e}") from None


def _mask(shape: tuple[int, int] | torch.Size, h: int, w: int) -> Tensor:
    m = torch.zeros(1, 1, int(shape[0]), int(shape[1]), dtype=torch.bool)
    m[..., :h, :w] = True
    return m


def _phase_mask(mask: Tensor, d: int, ph: int) -> Tensor:
    """The true-pixel mask (B, h, w) of phase ``ph`` at scale ``d``."""
    return to_phases(mask[..., ::2 ** d, ::2 ** d].to(torch.uint8))[:, ph, 0].bool()


def _crc(pixels: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())


def _png(plane: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(plane, dtype=np.uint8), "L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _unpng(data: bytes, size: tuple[int, int]) -> np.ndarray:
    try:
        return embedded_image(data, size, "L")
    except EmbeddedImageError as e:
        if e.shape is not None:
            raise DesyncError(f"lossless chunk: alpha plane is {e.shape}, the tile {tuple(size)}") from None
        raise DesyncError(f"lossless chunk: the alpha plane does not decode ({e})") from None
