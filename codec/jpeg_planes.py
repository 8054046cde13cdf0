"""Chroma planes of JPEG-decoded pixels: with them, a pixel's G and B follow from its R.

A baseline JPEG decoder draws each pixel from integers Y, Cb, Cr by the JFIF conversion (ITU-T
T.871 section 7) in libjpeg's 16-bit fixed point (``build_ycc_rgb_table``, the arithmetic of
libjpeg-turbo, the decoder in Pillow and most software):

    R = Y + CR_R[Cr],  G = Y + ((CB_G[Cb] + CR_G[Cr]) >> 16),  B = Y + CB_B[Cb],

each clamped to 0..255. So where R is not clamped, Y = R - CR_R[Cr], and G and B follow from R,
Cb and Cr; where R is clamped but G is not, B follows from G the same way. A lossless coder that
sends a Cb and a Cr per pixel (smooth planes: JPEG stores chroma at half resolution and upsamples
it) codes only R with its model and derives G and B: on JPEG-decoded photos that replaces two of
the three channels with two planes that a general lossless coder packs in a fraction of their bits.

The encoder (:func:`chroma_planes`) needs only the pixels: each of the 65,536 (Cb, Cr) pairs gives
a distinct (B - R, G - R) where nothing clamps, so a table look-up finds it; where G or B clamps it
searches near the neighbours' chroma for a pair that still reproduces the pixel. Pixels left
without one are marked, and the coder codes their G and B as usual. Pixels that no decoder of
this kind wrote (a PNG photo) have no such pairs, and :func:`chroma_planes` says so.

The planes travel as one lossless WebP image (Cb, Cr, mask x 255), through Pillow.
"""
from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

_SCALEBITS = 16
_ONE_HALF = 1 << (_SCALEBITS - 1)
#: Fraction of a tile's unclamped pixels whose (B - R, G - R) must match a (Cb, Cr) pair for the
#: tile to be coded with chroma planes (a JPEG decode matches all of them; a PNG photo about 20 %).
MIN_MATCHED = 0.95
#: How far (in levels of Cb and Cr) the encoder looks from the neighbours' chroma for a pair that
#: reproduces a pixel whose G or B clamps.
SEARCH = 12
#: WebP's largest side.
MAX_SIDE = 16383


class PlanesError(ValueError):
    """A chroma-plane block that does not decode to planes of the tile's size."""


def _fix(x: float) -> int:
    return int(x * (1 << _SCALEBITS) + 0.5)


_X = np.arange(256, dtype=np.int64) - 128
#: Cr -> R and Cb -> B offsets (rounded); the Cb and Cr -> G terms, scaled by 2^16 (half in Cb's).
CR_R = (_fix(1.40200) * _X + _ONE_HALF) >> _SCALEBITS
CB_B = (_fix(1.77200) * _X + _ONE_HALF) >> _SCALEBITS
CR_G = -_fix(0.71414) * _X
CB_G = -_fix(0.34414) * _X + _ONE_HALF


def _g_term(cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    return (CB_G[cb] + CR_G[cr]) >> _SCALEBITS


def ycc_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB of integer Y, Cb, Cr in 0..255 (the decoder's conversion above)."""
    y = np.asarray(y, dtype=np.int64)
    cb, cr = np.asarray(cb, dtype=np.intp), np.asarray(cr, dtype=np.intp)
    rgb = np.stack([y + CR_R[cr], y + _g_term(cb, cr), y + CB_B[cb]], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def green(r: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(where G follows from R: R not clamped, G there) for integer arrays R, Cb, Cr."""
    r = np.asarray(r, dtype=np.int64)
    cb, cr = np.asarray(cb, dtype=np.intp), np.asarray(cr, dtype=np.intp)
    return (r > 0) & (r < 255), np.clip(r - CR_R[cr] + _g_term(cb, cr), 0, 255)


def blue(r: np.ndarray, g: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(where B follows from R, or from G where R is clamped; B there) for integer arrays."""
    r, g = np.asarray(r, dtype=np.int64), np.asarray(g, dtype=np.int64)
    cb, cr = np.asarray(cb, dtype=np.intp), np.asarray(cr, dtype=np.intp)
    r_free, g_free = (r > 0) & (r < 255), (g > 0) & (g < 255)
    y = np.where(r_free, r - CR_R[cr], g - _g_term(cb, cr))
    return r_free | g_free, np.clip(y + CB_B[cb], 0, 255)


def _reproduces(rgb: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the pixels whose G and B the pair (Cb, Cr) derives correctly wherever they are derived,
    the pixels where at least one of them is derived)."""
    r, g, b = (rgb[..., k].astype(np.int64) for k in range(3))
    g_ok, g_val = green(r, cb, cr)
    b_ok, b_val = blue(r, g, cb, cr)
    good = (~g_ok | (g_val == g)) & (~b_ok | (b_val == b))
    return good, g_ok | b_ok


@functools.lru_cache(maxsize=1)
def _pair_table() -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys of (B - R, G - R) over every (Cb, Cr) without clamping, their pairs Cb * 256 + Cr)."""
    cb, cr = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    key = _key(CB_B[cb] - CR_R[cr], _g_term(cb, cr) - CR_R[cr]).reshape(-1)
    order = np.argsort(key)
    if len(np.unique(key)) != key.size:  # the arithmetic above makes every pair distinct
        raise AssertionError("two (Cb, Cr) pairs share a (B - R, G - R)")
    return key[order], order


def _key(b_minus_r: np.ndarray, g_minus_r: np.ndarray) -> np.ndarray:
    return (b_minus_r + 1024) * 4096 + (g_minus_r + 2048)


def _fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``values`` with each unknown entry replaced by the mean of its known 4-neighbours, growing
    inwards from the known ones (smooth planes compress well); 128 where nothing is known."""
    v, k = values.astype(np.float64), known.copy()
    if not k.any():
        return np.full(values.shape, 128, dtype=np.int64)
    while not k.all():
        total, count = np.zeros_like(v), np.zeros_like(v)
        for axis, step in ((0, 1), (0, -1), (1, 1), (1, -1)):
            total += np.roll(np.where(k, v, 0.0), step, axis) * _not_wrapped(v.shape, axis, step)
            count += np.roll(k, step, axis) * _not_wrapped(v.shape, axis, step)
        grow = ~k & (count > 0)
        v[grow] = total[grow] / count[grow]
        k |= grow
    return np.round(v).astype(np.int64)


def _not_wrapped(shape: tuple[int, ...], axis: int, step: int) -> np.ndarray:
    """1 where np.roll(., step, axis) brought a real neighbour, 0 where it wrapped around."""
    m = np.ones(shape)
    edge = [slice(None)] * len(shape)
    edge[axis] = slice(0, 1) if step > 0 else slice(-1, None)
    m[tuple(edge)] = 0.0
    return m


def chroma_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Encoder: for JPEG-decoded pixels (h, w, 3) uint8, planes Cb, Cr (h, w) uint8 under which
    :func:`green` and :func:`blue` give each pixel's G and B, and the mask (h, w) bool of pixels
    where no pair was found (their G and B are coded). None when fewer than :data:`MIN_MATCHED` of
    the unclamped pixels match a pair (not a JPEG decode of this kind) or a side exceeds WebP's."""
    h, w, _ = rgb.shape
    if h > MAX_SIDE or w > MAX_SIDE:
        return None
    px = rgb.astype(np.int64)
    keys, pairs = _pair_table()
    k = _key(px[..., 2] - px[..., 0], px[..., 1] - px[..., 0])
    pos = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
    matched = keys[pos] == k
    unclamped = ((px > 0) & (px < 255)).all(-1)
    if unclamped.any() and (matched & unclamped).sum() < MIN_MATCHED * unclamped.sum():
        return None
    pair = pairs[pos]
    cb, cr = np.where(matched, pair // 256, 128), np.where(matched, pair % 256, 128)
    good, needed = _reproduces(rgb, cb, cr)
    good &= matched
    cb, cr = _fill(cb, good), _fill(cr, good)
    todo = needed & ~good
    if todo.any():  # clamped G or B: the nearest pair (to the filled-in chroma) that still works
        idx = np.flatnonzero(todo)
        sub, cb0, cr0 = rgb.reshape(-1, 3)[idx], cb.reshape(-1)[idx], cr.reshape(-1)[idx]
        found = np.zeros(len(idx), dtype=bool)
        offsets = sorted(((a, b) for a in range(-SEARCH, SEARCH + 1) for b in range(-SEARCH, SEARCH + 1)),
                         key=lambda o: (abs(o[0]) + abs(o[1]), o))
        for a, b in offsets:
            left = ~found
            if not left.any():
                break
            tb, tr = np.clip(cb0[left] + a, 0, 255), np.clip(cr0[left] + b, 0, 255)
            ok = _reproduces(sub[left], tb, tr)[0]
            where = np.flatnonzero(left)[ok]
            cb0[where], cr0[where], found[where] = tb[ok], tr[ok], True
        cb.reshape(-1)[idx], cr.reshape(-1)[idx] = cb0, cr0
        todo.reshape(-1)[idx[found]] = False
    return cb.astype(np.uint8), cr.astype(np.uint8), todo


def pack(cb: np.ndarray, cr: np.ndarray, mask: np.ndarray) -> bytes:
    """The planes as one lossless WebP image (Cb, Cr, 255 x mask)."""
    buf = io.BytesIO()
    img = np.stack([cb, cr, mask.astype(np.uint8) * 255], -1)
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8), "RGB").save(buf, format="WEBP", lossless=True,
                                                                           quality=100, method=4)
    return buf.getvalue()


def unpack(data: bytes, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of :func:`pack` for a tile of ``size`` (h, w); :class:`PlanesError` on bad data."""
    try:
        img = Image.open(io.BytesIO(data), formats=["WEBP"])
        img.load()
    except Exception as e:  # Pillow raises several kinds on bad data
        raise PlanesError(f"chroma planes do not decode ({e})") from None
    a = np.asarray(img.convert("RGB"))
    if a.shape[:2] != size:
        raise PlanesError(f"chroma planes are {a.shape[:2]}, the tile {size}")
    if not np.isin(a[..., 2], (0, 255)).all():
        raise PlanesError("chroma planes: the mask holds values other than 0 and 255")
    return a[..., 0], a[..., 1], a[..., 2] == 255
