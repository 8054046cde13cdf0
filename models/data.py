"""Training and evaluation data: CIFAR-10 mosaic shards and random crops of photographs
(``../shared/README.md``). Everything is uint8 (N, 3, H, W) numpy; sampling is driven by a
``numpy.random.Generator`` whose state the trainer checkpoints, so a resumed run draws the same
batches it would have drawn."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def load_cifar_shard(path: Path) -> np.ndarray:
    """One lossless WebP mosaic of 1,000 CIFAR-10 images (25 rows x 40 columns of 32x32 tiles)
    -> (1000, 3, 32, 32) uint8, in the shard's order."""
    mosaic = np.asarray(Image.open(path).convert("RGB"))
    if mosaic.shape != (800, 1280, 3):
        raise ValueError(f"{path}: expected an 800x1280 mosaic, got {mosaic.shape}")
    tiles = mosaic.reshape(25, 32, 40, 32, 3).transpose(0, 2, 4, 1, 3)
    return np.ascontiguousarray(tiles.reshape(1000, 3, 32, 32))


def load_cifar(split: str, data_dir: Path = DEFAULT_DATA, shards: int | None = None) -> np.ndarray:
    """All (or the first ``shards``) shards of ``split`` ("train" or "test")."""
    files = sorted((data_dir / "cifar10").glob(f"{split}_*.webp"))
    if not files:
        hint = (" (pack-for-device copies train shards only: train with --val-every 0, or copy"
                " ../shared/data/cifar10/test_*.webp there too)"
                ) if split == "test" and any((data_dir / "cifar10").glob("train_*.webp")) else ""
        raise FileNotFoundError(f"no CIFAR-10 {split} shards in {data_dir / 'cifar10'}{hint}")
    files = files[:shards] if shards else files
    return np.concatenate([load_cifar_shard(f) for f in files])


def load_image(path: Path) -> np.ndarray:
    """An image file as (3, H, W) uint8 RGB."""
    return np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1))


def photo_files(data_dir: Path = DEFAULT_DATA, split: str = "train") -> list[Path]:
    """Photographs for training ("train": BSDS500 train+test, SUN-Hays 80 and the lossless
    wallpaper photos) or validation ("val": BSDS500 val, held out).

    ``data_dir`` is ``../shared/data`` or a folder written by ``../shared/tools/pack-for-device``
    (``.devdata``), whose ``photos/`` is flat (``train_100075.jpg``, ``sunhays80_abbey_*.jpg``)
    and already downscaled by 2; :func:`load_photos` tells the two apart by the path."""
    root = data_dir / "photos"
    if any(root.glob("*.jpg")):  # photos directly in photos/: the packed layout (see _is_packed)
        if split == "val":
            return sorted(root.glob("val_*.jpg"))
        return (sorted(root.glob("train_*.jpg")) + sorted(root.glob("test_*.jpg"))
                + sorted(root.glob("sunhays80_*.jpg")) + sorted(root.glob("wallpapers_*.jpg")))
    if split == "val":
        return sorted((root / "bsds500" / "val").glob("*.jpg"))
    return (sorted((root / "bsds500" / "train").glob("*.jpg")) + sorted((root / "bsds500" / "test").glob("*.jpg"))
            + sorted((root / "sunhays80").glob("*.jpg")) + sorted((root / "wallpapers").glob("*.webp")))


def _is_packed(f: Path) -> bool:
    """A photo of pack-for-device's flat, pre-halved layout (``.../photos/train_100075.jpg``);
    ``../shared/data`` keeps its photos one folder deeper (``photos/bsds500/train/...``)."""
    return f.parent.name == "photos"


def photo_training_size(f: Path, stored: tuple[int, int], min_side: int = 160,
                        native: bool = False) -> tuple[int, int]:
    """The (width, height) a photo is trained at: BSDS500 (JPEG quality ~90) halved, SUN-Hays
    (quality ~50) to a longest side of 320, so JPEG artefacts and blurred chroma shrink below a
    pixel; the wallpapers (lossless, already downscaled from their sources) as stored. ``stored`` is
    the file's size; packed files (see :func:`photo_files`) were halved already (odd sides rounded
    down), so the same BSDS500 or SUN-Hays photo gets the same training size from either layout,
    up to one pixel (a packed wallpaper stays halved: its full resolution did not travel).
    ``native``: BSDS500 (quality ~90) as stored, with its camera noise and fine texture, as a
    lossless coder meets photos (the lossless head's ``train_lossless --native``); SUN-Hays
    (quality ~50) is still shrunk, its artefacts being larger than any texture."""
    packed = _is_packed(f)
    wallpaper = f.name.startswith("wallpapers_") if packed else "wallpapers" in f.parts
    if wallpaper:
        return stored
    original = (stored[0] * 2, stored[1] * 2) if packed else stored
    bsds = not f.name.startswith("sunhays80_") if packed else "bsds500" in f.parts
    if bsds and packed:
        if native:
            raise ValueError(f"{f} was halved when packed: its native resolution did not travel")
        return stored
    if bsds and native:
        return stored
    factor = 2.0 if bsds else max(original) / 320.0
    return max(min_side, round(original[0] / factor)), max(min_side, round(original[1] / factor))


def load_photos(files: list[Path], min_side: int = 160, native: bool = False) -> list[np.ndarray]:
    """Decode the photos and bring each to :func:`photo_training_size` (Lanczos)."""
    out = []
    for f in files:
        im = Image.open(f).convert("RGB")
        size = photo_training_size(f, im.size, min_side, native)
        if size != im.size:
            im = im.resize(size, Image.LANCZOS)
        out.append(np.asarray(im).transpose(2, 0, 1).copy())
    return out


class CropSampler:
    """Random crops of ``size`` at random scales (x1 to x``max_zoom_out``) with horizontal flips.
    ``by_area``: pick each photo with probability proportional to its pixel count (every pixel
    equally likely), so a few large clean photos are not drowned by many small JPEGs."""

    def __init__(self, images: list[np.ndarray], size: int, max_zoom_out: float = 1.5,
                 by_area: bool = False) -> None:
        self.images, self.size, self.max_zoom_out = images, size, max_zoom_out
        area = np.array([im.shape[1] * im.shape[2] for im in images], dtype=np.float64)
        self.p = area / area.sum() if by_area else None

    def batch(self, rng: np.random.Generator, n: int) -> np.ndarray:
        out = np.empty((n, 3, self.size, self.size), dtype=np.uint8)
        for i in range(n):
            img = self.images[rng.choice(len(self.images), p=self.p) if self.p is not None else rng.integers(len(self.images))]
            _, h, w = img.shape
            zoom = rng.uniform(1.0, min(self.max_zoom_out, h / self.size, w / self.size))
            side = int(self.size * zoom)
            top, left = rng.integers(h - side + 1), rng.integers(w - side + 1)
            crop = img[:, top:top + side, left:left + side]
            if side != self.size:
                pil = Image.fromarray(crop.transpose(1, 2, 0)).resize((self.size, self.size), Image.BOX)
                crop = np.asarray(pil).transpose(2, 0, 1)
            out[i] = crop[:, :, ::-1] if rng.random() < 0.5 else crop
        return out


class ArraySampler:
    """Random images (with horizontal flips) from a fixed array such as CIFAR-10."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def batch(self, rng: np.random.Generator, n: int) -> np.ndarray:
        idx = rng.integers(len(self.images), size=n)
        b = self.images[idx]
        flip = rng.random(n) < 0.5
        b[flip] = b[flip][..., ::-1]
        return np.ascontiguousarray(b)
