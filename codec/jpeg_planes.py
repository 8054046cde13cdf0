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

The planes travel as lossless WebP images, through Pillow: at full resolution (Cb, Cr, mask), or,
when smaller, at half resolution as JPEG stores them (found again by fitting libjpeg's upsampling
filter) with a full-resolution image of corrections (:func:`encode`).
"""
from __future__ import annotations

import functools
import io
import struct

import numpy as np
from PIL import Image, features

from .images import EmbeddedImageError, embedded_image

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
_LENGTH = struct.Struct("<I")
#: Share of the certain pixels that the half-resolution fit must reproduce for form 2 to be kept
#: without also trying form 1 (4:2:0 JPEGs: 98-99 %; 4:4:4 ones far less).
HALF_FIT = 0.95


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
    v, k = np.where(known, values, 0).astype(np.float64), known.copy()
    if not k.any():
        return np.full(values.shape, 128, dtype=np.int64)
    while not k.all():
        vk, kf = np.where(k, v, 0.0), k.astype(np.float64)
        total, count = np.zeros_like(v), np.zeros_like(v)
        for into, src in (((slice(1, None),), (slice(None, -1),)), ((slice(None, -1),), (slice(1, None),)),
                          ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                          ((slice(None), slice(None, -1)), (slice(None), slice(1, None)))):
            total[into] += vk[src]
            count[into] += kf[src]
        grow = ~k & (count > 0)
        v[grow] = total[grow] / count[grow]
        k |= grow
    return np.round(v).astype(np.int64)


def _nearest_pairs(rgb: np.ndarray, cb: np.ndarray, cr: np.ndarray, todo: np.ndarray) -> np.ndarray:
    """For the pixels ``todo`` (h, w) bool, the nearest (Cb, Cr) to the given ones (within
    :data:`SEARCH`, by city-block distance) under which :func:`green` and :func:`blue` reproduce the
    pixel, written into ``cb`` and ``cr``; returns the pixels for which none was found."""
    idx = np.flatnonzero(todo)
    sub, cb0, cr0 = rgb.reshape(-1, 3)[idx], cb.reshape(-1)[idx], cr.reshape(-1)[idx]
    found = np.zeros(len(idx), dtype=bool)
    offsets = sorted(((a, b) for a in range(-SEARCH, SEARCH + 1) for b in range(-SEARCH, SEARCH + 1)),
                     key=lambda o: (abs(o[0]) + abs(o[1]), o))
    for a, b in offsets:
        left = np.flatnonzero(~found)
        if not len(left):
            break
        tb, tr = np.clip(cb0[left] + a, 0, 255), np.clip(cr0[left] + b, 0, 255)
        ok = _reproduces(sub[left], tb, tr)[0]
        cb0[left[ok]], cr0[left[ok]], found[left[ok]] = tb[ok], tr[ok], True
    cb.reshape(-1)[idx], cr.reshape(-1)[idx] = cb0, cr0
    rest = todo.copy()
    rest.reshape(-1)[idx[found]] = False
    return rest


def chroma_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Encoder: for JPEG-decoded pixels (h, w, 3) uint8, full-resolution planes Cb, Cr (h, w)
    int64 under which :func:`green` and :func:`blue` give each pixel's G and B, the mask (h, w) of
    pixels where no pair was found (their G and B are coded), and the pixels whose pair is certain
    (nothing clamps: the decoder's own chroma there). None when fewer than :data:`MIN_MATCHED` of
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
    if todo.any():  # clamped G or B: the nearest pair to the filled-in chroma that still works
        todo = _nearest_pairs(rgb, cb, cr, todo)
    return cb, cr, todo, matched & unclamped


def upsample(c: np.ndarray, h: int, w: int) -> np.ndarray:
    """The (h, w) plane that libjpeg's h2v2 "fancy" upsampling draws from a chroma plane ``c`` of
    (ceil(h/2), ceil(w/2)) (``h2v2_fancy_upsample``): each output is (9 nearest + 3 + 3 + 1
    farthest) / 16 of the nearest sample and its neighbours towards the output, edges replicated,
    rounded with bias 8 at even columns and 7 at odd ones."""
    c = np.asarray(c, dtype=np.int64)
    rows = np.empty((2 * c.shape[0], c.shape[1]), dtype=np.int64)
    rows[0::2] = 3 * c + np.concatenate([c[:1], c[:-1]], 0)   # the upper output row leans on the row above
    rows[1::2] = 3 * c + np.concatenate([c[1:], c[-1:]], 0)
    out = np.empty((rows.shape[0], 2 * rows.shape[1]), dtype=np.int64)
    out[:, 0::2] = (3 * rows + np.concatenate([rows[:, :1], rows[:, :-1]], 1) + 8) >> 4
    out[:, 1::2] = (3 * rows + np.concatenate([rows[:, 1:], rows[:, -1:]], 1) + 7) >> 4
    return out[:h, :w]


def _upsample_linear(c: np.ndarray) -> np.ndarray:
    """:func:`upsample` without its rounding, at the padded size (2 ceil(h/2), 2 ceil(w/2))."""
    rows = np.empty((2 * c.shape[0], c.shape[1]))
    rows[0::2] = 3 * c + np.concatenate([c[:1], c[:-1]], 0)
    rows[1::2] = 3 * c + np.concatenate([c[1:], c[-1:]], 0)
    out = np.empty((rows.shape[0], 2 * rows.shape[1]))
    out[:, 0::2] = (3 * rows + np.concatenate([rows[:, :1], rows[:, :-1]], 1)) / 16
    out[:, 1::2] = (3 * rows + np.concatenate([rows[:, 1:], rows[:, -1:]], 1)) / 16
    return out


def _upsample_linear_adjoint(g: np.ndarray) -> np.ndarray:
    """The adjoint of :func:`_upsample_linear`: (2 H, 2 W) -> (H, W)."""
    even, odd = g[:, 0::2] / 16, g[:, 1::2] / 16
    rows = 3 * (even + odd)
    rows[:, :-1] += even[:, 1:]
    rows[:, 0] += even[:, 0]
    rows[:, 1:] += odd[:, :-1]
    rows[:, -1] += odd[:, -1]
    c = 3 * (rows[0::2] + rows[1::2])
    c[:-1] += rows[2::2]
    c[0] += rows[0]
    c[1:] += rows[1:-1:2]
    c[-1] += rows[-1]
    return c


def _block_sums(v: np.ndarray, hh: int, ww: int) -> np.ndarray:
    """Per half-resolution sample (i, j), the sum of ``v`` (h, w) over the outputs it reaches in
    :func:`upsample`: rows 2i-1..2i+2, columns 2j-1..2j+2."""
    p = np.zeros((2 * hh + 2, 2 * ww + 2))
    p[1:1 + v.shape[0], 1:1 + v.shape[1]] = v
    pairs = p[0::2] + p[1::2]              # rows 2i-1 and 2i, at index i
    rows = pairs[:-1] + pairs[1:]          # rows 2i-1..2i+2
    pairs = rows[:, 0::2] + rows[:, 1::2]
    return pairs[:, :-1] + pairs[:, 1:]


def fit_half(plane: np.ndarray, certain: np.ndarray, iterations: int = 20, sweeps: int = 2) -> np.ndarray:
    """A half-resolution chroma plane whose :func:`upsample` matches ``plane`` (h, w) at the
    ``certain`` pixels as often as it can: least squares on the filter without rounding
    (conjugate gradients on the normal equations, weighted by ``certain``), rounded, then sweeps
    over the four interleaved sub-grids of samples, each sample moved by -1, 0 or +1 to the value
    with the fewest mismatches among the outputs it reaches."""
    h, w = plane.shape
    hh, ww = (h + 1) // 2, (w + 1) // 2
    wt = np.zeros((2 * hh, 2 * ww))
    wt[:h, :w] = certain
    target = np.zeros((2 * hh, 2 * ww))
    target[:h, :w] = plane
    c = np.pad(plane.astype(np.float64), ((0, 2 * hh - h), (0, 2 * ww - w)), mode="edge").reshape(hh, 2, ww, 2).mean((1, 3))

    def normal(v: np.ndarray) -> np.ndarray:
        return _upsample_linear_adjoint(wt * _upsample_linear(v))

    r = _upsample_linear_adjoint(wt * target) - normal(c)
    p, rs = r.copy(), float((r * r).sum())
    for _ in range(iterations):
        if rs < 1e-9:
            break
        q = normal(p)
        a = rs / max(float((p * q).sum()), 1e-12)
        c += a * p
        r -= a * q
        rs, old = float((r * r).sum()), rs
        p = r + (rs / old) * p
    c = np.clip(np.round(c), 0, 255).astype(np.int64)
    for _ in range(sweeps):
        for di in range(2):
            for dj in range(2):
                grid = (slice(di, None, 2), slice(dj, None, 2))
                cost = []
                for move in (0, -1, 1):
                    trial = c.copy()
                    trial[grid] = np.clip(trial[grid] + move, 0, 255)
                    cost.append(_block_sums((upsample(trial, h, w) != plane) & certain, hh, ww)[grid])
                best = np.argmin(np.stack(cost), 0)  # ties keep the sample (move 0 comes first)
                c[grid] = np.clip(c[grid] + np.array([0, -1, 1])[best], 0, 255)
    return c


def encode(rgb: np.ndarray) -> bytes | None:
    """Encoder: the chroma planes of JPEG-decoded pixels (h, w, 3) uint8, serialized (:func:`decode`
    reads them), or None (:func:`chroma_planes`). Two forms: 1, the full-resolution Cb, Cr and mask
    as one lossless WebP image; 2, Cb and Cr at half resolution (:func:`fit_half`), which
    :func:`upsample` brings to full resolution, plus a full-resolution image of corrections (added
    to the upsampled planes where they do not reproduce a pixel) and the mask. Form 2 when the fit
    reproduces at least :data:`HALF_FIT` of the pixels whose chroma is certain (a 4:2:0 JPEG; the
    form is then the smaller by far), else the smaller of the two."""
    if not features.check("webp"):  # a Pillow built without libwebp: code the pixels as before
        return None
    found = chroma_planes(rgb)
    if found is None:
        return None
    cb, cr, marked, certain = found
    h, w = marked.shape

    def full() -> bytes:
        return b"\x01" + _webp(np.stack([cb, cr, marked * 255], -1))

    if min(h, w) < 2:
        return full()
    half = [fit_half(p, certain) for p in (cb, cr)]
    base_b, base_r = upsample(half[0], h, w), upsample(half[1], h, w)
    fitted = float(np.mean(((base_b == cb) & (base_r == cr))[certain])) if certain.any() else 0.0
    good, needed = _reproduces(rgb, base_b, base_r)
    fix = needed & ~good & ~marked
    up_b, up_r = base_b.copy(), base_r.copy()
    if fix.any():  # the nearest pair to the upsampled chroma; failing that, chroma_planes' pair
        rest = _nearest_pairs(rgb, up_b, up_r, fix)
        up_b[rest], up_r[rest] = cb[rest], cr[rest]
    if max(np.abs(up_b - base_b).max(), np.abs(up_r - base_r).max()) > 127:
        return full()
    small = _webp(np.stack([half[0], half[1], np.zeros_like(half[0])], -1))
    corrections = _webp(np.stack([up_b - base_b + 128, up_r - base_r + 128, marked * 255], -1))
    second = b"\x02" + _LENGTH.pack(len(small)) + small + corrections
    if fitted >= HALF_FIT:
        return second
    first = full()
    return second if len(second) < len(first) else first


def decode(data: bytes, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The planes Cb, Cr (int64) and mask (bool), each (h, w) = ``size``, that :func:`encode` wrote;
    :class:`PlanesError` on bad data."""
    h, w = size
    if not data or data[0] not in (1, 2):
        raise PlanesError("chroma planes: unknown form")
    if data[0] == 1:
        a = _unwebp(data[1:], (h, w))
        return a[..., 0].astype(np.int64), a[..., 1].astype(np.int64), _mask(a[..., 2])
    if len(data) < 1 + _LENGTH.size:
        raise PlanesError("chroma planes: truncated")
    n = _LENGTH.unpack_from(data, 1)[0]
    if 1 + _LENGTH.size + n > len(data):
        raise PlanesError("chroma planes: bad length")
    small = _unwebp(data[1 + _LENGTH.size:1 + _LENGTH.size + n], ((h + 1) // 2, (w + 1) // 2))
    corr = _unwebp(data[1 + _LENGTH.size + n:], (h, w)).astype(np.int64)
    cb = upsample(small[..., 0], h, w) + corr[..., 0] - 128
    cr = upsample(small[..., 1], h, w) + corr[..., 1] - 128
    if cb.min() < 0 or cb.max() > 255 or cr.min() < 0 or cr.max() > 255:
        raise PlanesError("chroma planes: corrections leave 0..255")
    return cb, cr, _mask(corr[..., 2])


def _mask(plane: np.ndarray) -> np.ndarray:
    if not np.isin(plane, (0, 255)).all():
        raise PlanesError("chroma planes: the mask holds values other than 0 and 255")
    return plane == 255


def _webp(img: np.ndarray) -> bytes:
    """(h, w, 3) values in 0..255 as a lossless WebP image."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8), "RGB").save(buf, format="WEBP", lossless=True,
                                                                           quality=100, method=4)
    return buf.getvalue()


def _unwebp(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """The inverse of :func:`_webp` for an image of ``size`` (h, w)."""
    if not features.check("webp"):
        raise PlanesError("this Pillow has no WebP support, which the stream's chroma planes need")
    try:
        return embedded_image(data, size, "RGB", ["WEBP"])
    except EmbeddedImageError as e:
        if e.shape is not None:
            raise PlanesError(f"chroma planes are {e.shape}, the tile {tuple(size)}") from None
        raise PlanesError(f"chroma planes do not decode ({e})") from None
