"""models.data reads ../shared/data and pack-for-device's .devdata layout alike."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssvcodec.models.data import load_cifar, load_photos, photo_files


def _smooth_image(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A photo-like test image: smooth gradients plus mild noise (JPEG keeps it close)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(xx / 37 + c) * np.cos(yy / 23 - c) for c in range(3)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8))


def _shared_layout(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("test", 1), ("val", 2)):
        (root / "photos" / "bsds500" / split).mkdir(parents=True)
        for i in range(n):
            size = (481, 321) if i % 2 == 0 else (321, 481)
            _smooth_image(rng, *size).save(root / "photos" / "bsds500" / split / f"{100 + i}.jpg", quality=95)
    (root / "photos" / "sunhays80").mkdir(parents=True)
    _smooth_image(rng, 1024, 768).save(root / "photos" / "sunhays80" / "abbey_sun_x.jpg", quality=95)


def _pack(shared: Path, dest: Path) -> None:
    """What ../shared/tools/pack-for-device --photos does to the photos."""
    (dest / "photos").mkdir(parents=True)
    for p in sorted((shared / "photos").rglob("*.jpg")):
        im = Image.open(p).convert("RGB")
        im = im.resize((im.width // 2, im.height // 2), Image.LANCZOS)
        im.save(dest / "photos" / (p.parent.name + "_" + p.stem + ".jpg"), quality=95, subsampling=0)


def test_packed_photos_train_at_the_same_sizes(tmp_path: Path) -> None:
    shared, packed = tmp_path / "shared", tmp_path / "devdata"
    _shared_layout(shared)
    _pack(shared, packed)
    for split, n in (("train", 4), ("val", 2)):
        a, b = photo_files(shared, split), photo_files(packed, split)
        assert len(a) == len(b) == n
        assert [p.stem for p in a] == [p.stem.split("_", 1)[1] for p in b]
        ia, ib = load_photos(a), load_photos(b)
        assert [x.shape for x in ia] == [x.shape for x in ib]
        for x, y in zip(ia, ib):
            assert np.abs(x.astype(float) - y).mean() < 3.0  # JPEG re-save and a second resampling only
    sizes = [x.shape[1:] for x in load_photos(photo_files(shared, "train"))]
    assert sizes == [(160, 240), (240, 160), (160, 240), (240, 320)]  # BSDS halved, SUN-Hays to 320
    # native (the lossless head's --native): BSDS500 as stored, SUN-Hays still shrunk; a packed
    # photo, halved already, is refused rather than trained at the wrong scale
    native = [x.shape[1:] for x in load_photos(photo_files(shared, "train"), native=True)]
    assert native == [(321, 481), (481, 321), (321, 481), (240, 320)]
    with pytest.raises(ValueError, match="halved when packed"):
        load_photos(photo_files(packed, "train"), native=True)


def test_missing_test_shards_say_what_to_copy(tmp_path: Path) -> None:
    (tmp_path / "cifar10").mkdir()
    Image.new("RGB", (1280, 800)).save(tmp_path / "cifar10" / "train_000.webp", lossless=True)
    assert load_cifar("train", tmp_path).shape == (1000, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="test_\\*.webp"):
        load_cifar("test", tmp_path)
