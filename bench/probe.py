"""Paired comparison of rate-distortion models on six Kodak images, fast enough to run while
training: ``python -m ssvcodec.bench.probe A B [C ...] [--qualities -4:9]``.

Each of A, B, ... is shipped weights (``.safetensors``) or a ``models.train_rd`` checkpoint
(``checkpoint.pt``: its EMA weights). Every model codes the same images at the same qualities
through :meth:`~models.rd.RDSSVAE.top_down` with the codec's rounding; the rate is the ideal
bits of the rounded latents under their priors (what the range coder reaches to within a few
bytes per level: ``ssvcodec info --estimates``), the quality is the PSNR of each level's 8-bit
display image (render rounded, upsampled to full size as a decoder shows it). Printed: per model,
level and quality the mean bpp (of every level up to that one) and PSNR, then per level the
BD-rate of every model against the first (``bench.bdrate``, PCHIP in log-rate over the shared
PSNR range), and where two models have different numbers of levels, their full streams against
each other: the quick check behind the paired probes of docs/training.md. Real streams and all
24 images are ``bench.rd``'s job.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .bdrate import bd_rate
from .metrics import psnr

ROOT = Path(__file__).resolve().parent.parent
KODAK = ROOT.parent / "shared" / "data" / "kodak"
IMAGES = ("kodim01.png", "kodim04.png", "kodim07.png", "kodim13.png", "kodim19.png", "kodim23.png")


def load_model(path: Path):  # -> models.rd.RDSSVAE
    """An RD model from shipped weights or from a training checkpoint's EMA weights."""
    from ..models.export import load_rd_checkpoint
    from ..models.io import load_any
    from ..models.rd import RDSSVAE

    model = load_rd_checkpoint(path)[0] if path.suffix == ".pt" else load_any(path)
    if not isinstance(model, RDSSVAE):
        raise SystemExit(f"{path}: not a rate-distortion model")
    return model.eval()


def measure(model, images: list[np.ndarray], qualities: list[float]) -> dict[str, Any]:  # noqa: ANN001
    """Per level k (1-based) and quality: mean bpp up to level k and mean PSNR of its display image."""
    import torch

    from ..models.rd import rounding_quantizer, upsample

    cfg = model.config
    rows: dict[str, Any] = {}
    with torch.no_grad():
        for q in qualities:
            bpp = np.zeros(cfg.levels)
            ps = np.zeros(cfg.levels)
            for img in images:
                h, w = img.shape[:2]
                if h % cfg.pad_multiple or w % cfg.pad_multiple:
                    raise SystemExit(f"image sides must be multiples of {cfg.pad_multiple}")
                x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None].float() / 255 - 0.5
                total = 0.0
                for o in model.top_down(torch.tensor([q]), rounding_quantizer, x):
                    total += float(o.bits.sum()) / (h * w)
                    shown = upsample(o.render, cfg.render_strides[o.k]).clamp(-0.5, 0.5)
                    shown = ((shown[0] + 0.5) * 255).round().byte().permute(1, 2, 0).numpy()
                    bpp[o.k] += total / len(images)
                    ps[o.k] += psnr(shown, img) / len(images)
            rows[str(q)] = {"bpp": bpp.tolist(), "psnr": ps.tolist()}
    return rows


def parse_qualities(text: str) -> list[float]:
    """``LO:HI`` (every integer from LO to HI) or a comma list."""
    if ":" in text:
        lo, hi = (int(v) for v in text.split(":"))
        return [float(q) for q in range(lo, hi + 1)]
    return [float(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path, help="weights (.safetensors) or checkpoints (.pt); the first is the anchor")
    ap.add_argument("--qualities", default="-4:9", help="LO:HI or a comma list (default -4:9)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    if not KODAK.is_dir():
        sys.exit(f"no Kodak images at {KODAK}")
    images = [np.asarray(Image.open(KODAK / n).convert("RGB")) for n in IMAGES]
    qualities = parse_qualities(args.qualities)
    results: dict[str, Any] = {}
    for path in args.models:
        model = load_model(path)
        results[str(path)] = r = measure(model, images, qualities)
        print(f"{path}:")
        for q in qualities:
            cells = "  ".join(f"L{k + 1} {b:.4f} bpp {p:.2f} dB" for k, (b, p) in enumerate(zip(r[str(q)]["bpp"], r[str(q)]["psnr"])))
            print(f"  q={q:g}: {cells}")
    anchor = str(args.models[0])
    levels = len(next(iter(results[anchor].values()))["bpp"])
    for path in args.models[1:]:
        cells = []
        own = len(next(iter(results[str(path)].values()))["bpp"])
        pairs = [(k, k) for k in range(min(levels, own))] + ([(levels - 1, own - 1)] if own != levels else [])
        for ka, kb in pairs:  # level by level, and the full streams when the models have different levels
            curve = [[results[m][str(q)][key][k] for q in qualities] for m, k in ((anchor, ka), (str(path), kb))
                     for key in ("bpp", "psnr")]
            label = f"L{kb + 1}" if ka == kb else f"L{kb + 1} (full) vs L{ka + 1}"
            cells.append(f"{label} {bd_rate(*curve):+.2f} %")
        print(f"BD-rate of {path} vs {anchor}: " + ", ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
