"""codec/jpeg_planes.py: the JPEG decoder's colour conversion as Pillow's libjpeg-turbo runs it, and
chroma planes under which G and B of JPEG-decoded pixels follow from R."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ssvcodec.codec import jpeg_planes as jp

from .conftest import synthetic


def jpeg_decoded(img: np.ndarray, quality: int = 90, subsampling: int = 2) -> bytes:
    """``img`` saved as a JPEG by Pillow (subsampling 2: 4:2:0, 0: 4:4:4)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def _bright(h: int, w: int) -> np.ndarray:
    """A synthetic image with saturated patches, so that R, G and B each clamp somewhere."""
    img = synthetic(h, w, 4).astype(np.int64)
    img[: h // 3, : w // 2] += 120
    img[h // 2:, w // 2:, 1] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("subsampling", [2, 0])
def test_the_conversion_is_the_decoders(subsampling: int) -> None:
    data = jpeg_decoded(_bright(48, 64), subsampling=subsampling)
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    ycc = Image.open(io.BytesIO(data))
    ycc.draft("YCbCr", ycc.size)  # the decoder's planes before its colour conversion
    planes = np.asarray(ycc)
    assert np.array_equal(jp.ycc_to_rgb(planes[..., 0], planes[..., 1], planes[..., 2]), rgb)


@pytest.mark.parametrize("subsampling", [2, 0])
def test_g_and_b_follow_from_r_on_jpeg_pixels(subsampling: int) -> None:
    rgb = np.asarray(Image.open(io.BytesIO(jpeg_decoded(_bright(64, 80), subsampling=subsampling))).convert("RGB"))
    assert ((rgb == 0) | (rgb == 255)).any(-1).mean() > 0.05  # clamped pixels are part of the test
    data = jp.encode(rgb)
    # 4:2:0: JPEG's own half-resolution chroma is the smaller form; 4:4:4 has none
    assert data is not None and data[0] == (2 if subsampling == 2 else 1)
    cb, cr, marked = jp.decode(data, rgb.shape[:2])
    assert cb.shape == cr.shape == marked.shape == rgb.shape[:2]
    r, g, b = (rgb[..., k].astype(np.int64) for k in range(3))
    g_follows, g_val = jp.green(r, cb, cr)
    b_follows, b_val = jp.blue(r, g, cb, cr)
    g_follows &= ~marked
    b_follows &= ~marked
    assert np.array_equal(g_val[g_follows], g[g_follows]) and np.array_equal(b_val[b_follows], b[b_follows])
    assert g_follows.mean() > 0.8 and b_follows.mean() > 0.8 and marked.mean() < 0.01


def test_pixels_no_jpeg_decoder_wrote_have_no_planes() -> None:
    assert jp.encode(synthetic(40, 56, 2)) is None  # noise added in RGB
    assert jp.encode(np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8)) is None


def test_a_pixel_without_a_pair_is_marked_not_lost() -> None:
    rgb = np.asarray(Image.open(io.BytesIO(jpeg_decoded(synthetic(32, 32, 1)))).convert("RGB")).copy()
    rgb[5, 7] = (200, 10, 200)  # no (Cb, Cr) near its neighbours' gives this pixel
    found = jp.chroma_planes(rgb)
    assert found is not None and found[2][5, 7] and found[2].sum() <= 3
    marked = jp.decode(jp.encode(rgb), rgb.shape[:2])[2]
    assert marked[5, 7] and marked.sum() <= 3


def test_upsample_is_libjpegs_triangle_filter() -> None:
    c = np.array([[0, 160], [32, 64]])
    # row 0 of the output leans on row 0 again (edge), row 1 on row 1: column sums 4 c0 and 3 c0 + c1
    rows = np.array([[0, 640], [32, 544]])  # 3 c[0] + c[0] and 3 c[0] + c[1], per column
    want0 = [(4 * rows[0, 0] + 8) >> 4, (3 * rows[0, 0] + rows[0, 1] + 7) >> 4,
             (3 * rows[0, 1] + rows[0, 0] + 8) >> 4, (4 * rows[0, 1] + 7) >> 4]
    want1 = [(4 * rows[1, 0] + 8) >> 4, (3 * rows[1, 0] + rows[1, 1] + 7) >> 4,
             (3 * rows[1, 1] + rows[1, 0] + 8) >> 4, (4 * rows[1, 1] + 7) >> 4]
    out = jp.upsample(c, 3, 4)
    assert out[0].tolist() == want0 and out[1].tolist() == want1 and out.shape == (3, 4)


def test_the_half_resolution_fit_recovers_an_upsampled_plane() -> None:
    rng = np.random.default_rng(1)
    half = np.clip(np.cumsum(rng.integers(-4, 5, (20, 31)), 1) + 120, 0, 255)
    plane = jp.upsample(half, 39, 61)
    fit = jp.fit_half(plane, np.ones(plane.shape, dtype=bool))
    assert np.mean(jp.upsample(fit, 39, 61) != plane) < 0.01


def test_the_planes_serialize_losslessly_and_bad_bytes_are_refused() -> None:
    rgb = np.asarray(Image.open(io.BytesIO(jpeg_decoded(synthetic(24, 40, 3)))).convert("RGB"))
    data = jp.encode(rgb)
    planes = jp.decode(data, (24, 40))
    r, g, b = (rgb[..., k].astype(np.int64) for k in range(3))
    follows, value = jp.green(r, planes[0], planes[1])
    assert np.array_equal(value[follows & ~planes[2]], g[follows & ~planes[2]])
    with pytest.raises(jp.PlanesError, match="tile"):
        jp.decode(data, (24, 41))
    for bad in (data[: len(data) // 2], b"\x01RIFF" + bytes(40), b"\x03" + data[1:], b""):
        with pytest.raises(jp.PlanesError):
            jp.decode(bad, (24, 40))
