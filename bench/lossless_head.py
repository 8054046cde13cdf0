"""Real lossless streams of a lossless head on Kodak images (or any): ``python -m ssvcodec.bench.lossless_head
HEAD [--qualities 0,4,8] [--images kodim01.png,...,/path/photo.jpg] [--max-errors 1,2] [--halve]``.

HEAD: a ``models.train_lossless`` checkpoint (its EMA weights, exported to a temporary file) or
head weights (``.safetensors``). For each image and lossy quality q: ``RDCodec.encode(...,
lossless=True)`` (the stream ``ssvcodec encode --lossless --quality q`` writes), its bytes split
into the lossy levels and the X chunks, whether it decodes bit for bit, and the encode and
decode times in this process, beside WebP lossless of the same pixels (``bench.codecs``'
settings); then the means. ``--max-errors``: near-lossless streams (``--max-error N``) beside
JPEG-LS with the same bound (imagecodecs / CharLS, ``NEAR`` = N), both checked to stay within N.
``--halve``: each image downscaled by 2 first, so JPEG files give photos that no JPEG decoder drew
(no chroma planes: :mod:`codec.jpeg_planes`). For watching a head train and choosing the lossy quality; the bench's
lossless table comes from ``bench.rd`` (curve ``ssvcodec-lossless``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
KODAK = ROOT.parent / "shared" / "data" / "kodak"
DEFAULT_IMAGES = ("kodim01.png", "kodim04.png", "kodim07.png", "kodim13.png", "kodim19.png", "kodim23.png")


def webp_lossless_bpp(img: np.ndarray) -> float:
    """WebP lossless bpp of ``img``, with the bench's settings (``bench.codecs``' webp-lossless)."""
    from .codecs import get_codec

    codec = get_codec("webp-lossless")
    return 8 * len(codec.encode(img, codec.qualities[0])) / (img.shape[0] * img.shape[1])


def load(path: Path, halve: bool) -> np.ndarray:
    """The image's pixels as a decoder gives them, or (``halve``) downscaled by 2 with Lanczos."""
    img = Image.open(path)
    if halve:
        img = img.convert("RGB").resize((img.size[0] // 2, img.size[1] // 2), Image.LANCZOS)
    return np.asarray(img)


def jpegls_near(img: np.ndarray, n: int) -> tuple[float, int]:
    """(bpp, largest error) of JPEG-LS with the near-lossless bound ``n`` (CharLS via imagecodecs)."""
    import imagecodecs

    data = imagecodecs.jpegls_encode(img, level=n)
    err = int(np.abs(imagecodecs.jpegls_decode(data).astype(np.int16) - img).max())
    return 8 * len(data) / (img.shape[0] * img.shape[1]), err


def head_weights(source: Path, tmp: Path) -> Path:
    """``source`` as head weights: a checkpoint is exported (EMA) into ``tmp``."""
    if source.suffix == ".safetensors":
        return source
    from ..models.export import load_lossless_checkpoint
    from ..models.io import save_weights

    head, info = load_lossless_checkpoint(source)
    out = tmp / "head.safetensors"
    save_weights(head, out, info)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("head", type=Path, help="a train_lossless checkpoint or lossless head weights (.safetensors)")
    ap.add_argument("--qualities", default="2")
    ap.add_argument("--images", default=",".join(DEFAULT_IMAGES), help="Kodak file names or paths")
    ap.add_argument("--weights", default=None, help="the RD model (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-errors", default="", help="near-lossless bounds N to measure too (at the first quality)")
    ap.add_argument("--halve", action="store_true",
                    help="code each image downscaled by 2 (Lanczos): a JPEG's photos without its decoder's structure")
    args = ap.parse_args(argv)

    import torch

    from ..codec.bitstream import ChunkType, read_stream
    from ..codec.rd_api import RDCodec

    torch.set_num_threads(args.threads)
    images = args.images.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        head = head_weights(args.head, Path(tmp))
        codec = RDCodec(args.weights, lossless_weights=head) if args.weights else RDCodec(lossless_weights=head)
        print(f"head {args.head}; RD weights {codec.weights}; {len(images)} images; {args.threads} threads")
        webp: dict[str, float] = {}
        for q in (float(v) for v in args.qualities.split(",")):
            rows = []
            for name in images:
                img = load(KODAK / name, args.halve)
                t0 = time.perf_counter()
                data = codec.encode(img, quality=q, lossless=True)
                t1 = time.perf_counter()
                out = codec.decode(data)
                t2 = time.perf_counter()
                px = img.shape[0] * img.shape[1]
                x_bytes = sum(len(c.payload) + 18 for c in read_stream(data).chunks if c.type is ChunkType.X)
                if name not in webp:
                    webp[name] = webp_lossless_bpp(img)
                rows.append((8 * len(data) / px, 8 * (len(data) - x_bytes) / px, bool(np.array_equal(out, img)), t1 - t0, t2 - t1))
                print(f"  q={q:g} {name}: {rows[-1][0]:.3f} bpp (lossy levels {rows[-1][1]:.3f}; WebP lossless "
                      f"{webp[name]:.3f}), bit-exact {rows[-1][2]}, encode {rows[-1][3]:.2f} s, decode {rows[-1][4]:.2f} s",
                      flush=True)
            m = np.mean([r[:2] for r in rows], 0)
            ref = float(np.mean([webp[name] for name in images]))
            print(f"q={q:g}: {m[0]:.3f} bpp = lossy levels {m[1]:.3f} + X {m[0] - m[1]:.3f}; WebP lossless {ref:.3f} "
                  f"({100 * (m[0] / ref - 1):+.1f} %); bit-exact {sum(r[2] for r in rows)}/{len(rows)}; encode "
                  f"{np.mean([r[3] for r in rows]):.2f} s, decode {np.mean([r[4] for r in rows]):.2f} s per image", flush=True)
        for n in (int(v) for v in args.max_errors.split(",") if v):
            ours, ls = [], []
            q = float(args.qualities.split(",")[0])
            for name in images:
                img = load(KODAK / name, args.halve)
                px = img.shape[0] * img.shape[1]
                data = codec.encode(img, quality=q, lossless=True, max_error=n)
                err = int(np.abs(codec.decode(data).astype(np.int16) - img).max())
                ours.append((8 * len(data) / px, err))
                ls.append(jpegls_near(img, n))
            print(f"max error {n} (q={q:g}): ssvcodec {np.mean([o[0] for o in ours]):.3f} bpp (largest error "
                  f"{max(o[1] for o in ours)}), JPEG-LS {np.mean([o[0] for o in ls]):.3f} bpp (largest error "
                  f"{max(o[1] for o in ls)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
