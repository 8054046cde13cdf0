"""Images in and out of the codec: conversion of any input to 8-bit RGB with a notice of what
changed, the tiles of a large image, and one step of a progressive decode."""
from __future__ import annotations

from dataclasses import dataclass, field
import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

TILE_ABOVE_PIXELS = 2048 * 2048   # larger images are coded in tiles of DEFAULT_TILE
DEFAULT_TILE = 1024
#: the notice of an input with alpha (a lossless stream keeps the alpha, so the CLI leaves it out then)
ALPHA_NOTICE = "alpha channel not in the lossy levels (--lossless codes it)"


@dataclass
class RGBImage:
    """An 8-bit RGB array (H, W, 3) plus what the conversion did."""

    pixels: np.ndarray
    channels: int = 3                      # channels of the original (1, 3 or 4)
    notices: list[str] = field(default_factory=list)
    alpha: np.ndarray | None = None        # (H, W) uint8, for an original with alpha (channels 4)


def original_pixels(rgb: RGBImage) -> np.ndarray:
    """The 8-bit original a lossless stream reproduces: (H, W, 1) grey, (H, W, 3) RGB or
    (H, W, 4) RGBA (opaque if the alpha plane is missing)."""
    if rgb.channels == 1:
        return np.ascontiguousarray(rgb.pixels[..., :1])
    if rgb.channels == 4:
        alpha = rgb.alpha if rgb.alpha is not None else np.full(rgb.pixels.shape[:2], 255, np.uint8)
        return np.ascontiguousarray(np.concatenate([rgb.pixels, alpha[..., None]], 2))
    return rgb.pixels


def to_rgb8(image: Image.Image | np.ndarray) -> RGBImage:
    """Convert any PIL image or array to 8-bit RGB, saying what was changed."""
    notices: list[str] = []
    if isinstance(image, Image.Image):
        mode = image.mode
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(image).astype(np.float64)
            scale = 257.0 if arr.max() > 255 else 1.0
            notices.append("16-bit grey image reduced to 8 bits" if scale > 1 else f"{mode} grey image read as 8 bits")
            grey = to_rgb8(np.round(arr / scale).clip(0, 255).astype(np.uint8))
            return RGBImage(grey.pixels, 1, notices + grey.notices)
        if mode in ("L", "LA", "1"):
            if mode == "LA":
                la = np.asarray(image)
                return RGBImage(np.repeat(la[:, :, :1], 3, axis=2), 4,
                                notices + ["grey image with alpha coded as RGBA", ALPHA_NOTICE], la[:, :, 1].copy())
            g = np.asarray(image.convert("L"))
            return RGBImage(np.repeat(g[:, :, None], 3, axis=2), 1, notices + ["grey image coded as RGB; decoded back to grey"])
        if mode in ("RGBA", "PA") or (mode == "P" and "transparency" in image.info):
            notices.append(ALPHA_NOTICE)
            rgba = np.asarray(image.convert("RGBA"))
            return RGBImage(rgba[:, :, :3].copy(), 4, notices, rgba[:, :, 3].copy())
        if mode != "RGB":
            notices.append({"P": "palette", "CMYK": "CMYK", "YCbCr": "YCbCr", "F": "floating-point grey"}.get(mode, mode)
                           + " image converted to 8-bit RGB")
        return RGBImage(np.asarray(image.convert("RGB")).copy(), 3, notices)
    arr = np.asarray(image)
    if arr.dtype == np.uint16:
        notices.append("16-bit image reduced to 8 bits")
        arr = np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"unsupported array type {arr.dtype}: give uint8 or uint16 pixels")
    if arr.ndim == 2:
        return RGBImage(np.repeat(arr[:, :, None], 3, axis=2), 1, notices + ["grey image coded as RGB; decoded back to grey"])
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"unsupported image shape {arr.shape}: expected HxW, HxWx1, HxWx3 or HxWx4")
    if arr.shape[2] == 1:
        return to_rgb8(arr[:, :, 0]) if not notices else RGBImage(np.repeat(arr, 3, axis=2), 1, notices)
    if arr.shape[2] == 4:
        return RGBImage(np.ascontiguousarray(arr[:, :, :3]), 4, notices + [ALPHA_NOTICE],
                        np.ascontiguousarray(arr[:, :, 3]))
    return RGBImage(np.ascontiguousarray(arr), 3, notices)


class InputError(ValueError):
    """An input image ssvcodec will not code as it is (the message says why and what to do)."""


def _png_bit_depth(head: bytes) -> int:
    """Bit depth from a PNG's IHDR (Pillow reads 16-bit RGB PNGs as 8-bit RGB without a word)."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) > 24:
        return head[24]
    return 8


def open_image(source: str | Path | BinaryIO, name: str | None = None) -> RGBImage:
    """Open an image (a path or a binary stream: PNG, JPEG, WebP, TIFF, ... anything Pillow reads)
    as 8-bit RGB, with a notice for every conversion: EXIF rotation applied, 16-bit reduced,
    grey / alpha / palette / CMYK converted. An animated image is refused, naming its frame count."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source.read()
    label = name or str(source)
    try:
        opened = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(f"{label}: not an image file ssvcodec can read") from None
    with opened as im:
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            raise InputError(f"{label} is animated ({frames} frames): ssvcodec codes one still image; "
                             "extract a frame first")
        im.load()
        notices: list[str] = []
        if _png_bit_depth(data[:32]) == 16 and im.mode in ("RGB", "RGBA"):
            notices.append("16-bit image reduced to 8 bits")
        orientation = im.getexif().get(0x0112, 1)
        if orientation not in (0, 1):
            im = ImageOps.exif_transpose(im)
            notices.append(f"EXIF orientation {orientation} applied (the decoded image is upright)")
        rgb = to_rgb8(im)
        rgb.notices[:0] = notices
        return rgb


def load_image(path: str | Path) -> RGBImage:
    """Open an image file as 8-bit RGB (see :func:`open_image`)."""
    return open_image(path)


@dataclass
class LevelImage:
    """One step of a progressive decode."""

    level: int              # progressive level (1 = u only, ..., K+1 = all latents, K+2 = lossless)
    label: str              # RS1, RS2, ..., CR, lossless
    image: np.ndarray       # (H, W, 3) uint8, or (H, W) for a grey original
    bytes_used: int         # header + every chunk of levels <= level


class EmbeddedImageError(ValueError):
    """An image a stream carries that is not of the tile's size (``shape``) or does not decode."""

    def __init__(self, message: str, shape: tuple[int, ...] | None = None) -> None:
        super().__init__(message)
        self.shape = shape


def embedded_image(data: bytes, size: tuple[int, int], mode: str, formats: list[str] | None = None) -> np.ndarray:
    """The pixels (h, w[, C]) in ``mode`` of an image a stream carries (a lossless chunk's alpha or
    chroma planes), which must be ``size`` (h, w): checked before Pillow decodes it, so a forged
    size allocates nothing. :class:`EmbeddedImageError` otherwise (``shape`` set: the wrong size)."""
    try:
        img = Image.open(io.BytesIO(data), formats=formats)
    except Exception as e:  # Pillow raises several kinds on bad data
        raise EmbeddedImageError(str(e)) from None
    if img.size[::-1] != tuple(size):
        raise EmbeddedImageError("wrong size", img.size[::-1])
    try:
        img.load()
        return np.asarray(img.convert(mode))
    except Exception as e:
        raise EmbeddedImageError(str(e)) from None


def tiles(h: int, w: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) of every tile in raster order; one box when ``tile`` is 0."""
    if not tile:
        return [(0, h, 0, w)]
    return [(r, min(h, r + tile), c, min(w, c + tile)) for r in range(0, h, tile) for c in range(0, w, tile)]
