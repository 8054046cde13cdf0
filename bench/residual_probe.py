"""How much the lossy render x_hat helps a lossless coder (issue 13's design question):
``python -m ssvcodec.bench.residual_probe [--quality Q] [--images kodim01.png,...]``.

For each image, the ideal code length (bits, no entropy coder) of x under a classical causal
model, once with and once without the RD model's level-3 render x_hat as side information:

- a linear least-squares predictor per image and channel (coefficients rounded to 1/4096 and
  counted at 16 bits each) from the causal neighbours W, N, NW, NE, WW, NN, the earlier channels
  of the pixel and their W, N (R, then G given R, then B given R and G: the thesis' and
  PixelCNN++'s channel order), plus, with side information, x_hat at the pixel and at its eight
  neighbours' positions W, N, NW, NE, E, S;
- a discretized Laplace residual whose scale is fitted per image, channel and one of 24 buckets of
  local activity (gradients of the causal neighbours, |x - x_hat| at W and N, the earlier
  channels' residuals), 16 bits per bucket (the spirit of CALIC / JPEG-LS context modelling).

With side information the stream also pays the lossy prefix (the model's estimated bits at
``--quality``). Printed beside WebP lossless from ``bench/results/kodak.json``. An estimate of
what a residual coder on today's render can reach, not a codec.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
KODAK = ROOT.parent / "shared" / "data" / "kodak"
DEFAULT_IMAGES = ("kodim01.png", "kodim04.png", "kodim07.png", "kodim13.png", "kodim19.png", "kodim23.png")
BUCKETS = 24


def shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[i, j] = a[i - dy, j - dx]`` (zero outside): dy = 1 is the row above, dx = 1 the left."""
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    src_y, dst_y = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    src_x, dst_x = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[dst_y, dst_x] = a[src_y, src_x]
    return out


def laplace_bits(r: np.ndarray, b: float) -> np.ndarray:
    """Bits of integers ``r`` under a Laplace(0, b) discretized to unit bins."""
    def cdf(t: np.ndarray) -> np.ndarray:
        return np.where(t < 0, 0.5 * np.exp(t / b), 1 - 0.5 * np.exp(-t / b))
    return -np.log2(np.maximum(cdf(r + 0.5) - cdf(r - 0.5), 1e-12))


def code_length(x: np.ndarray, x_hat: np.ndarray | None) -> float:
    """Ideal bits of the uint8 image ``x`` (H, W, 3) under the causal model of the module
    docstring, with ``x_hat`` (H, W, 3, rounded render) as side information or without (None)."""
    xf = x.astype(np.float64)
    hf = None if x_hat is None else x_hat.astype(np.float64)
    total, earlier = 0.0, []
    for c in range(3):
        xc = xf[..., c]
        nb = [shifted(xc, 0, 1), shifted(xc, 1, 0), shifted(xc, 1, 1), shifted(xc, 1, -1), shifted(xc, 0, 2), shifted(xc, 2, 0)]
        feats = [*nb, np.ones_like(xc)]
        act = (np.abs(nb[0] - nb[2]) + np.abs(nb[1] - nb[2]) + np.abs(nb[1] - nb[3]) + np.abs(nb[0] - nb[4]))
        if hf is not None:
            hc = hf[..., c]
            feats += [hc] + [shifted(hc, dy, dx) for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1), (0, -1), (-1, 0))]
            act = act + np.abs(nb[0] - shifted(hc, 0, 1)) + np.abs(nb[1] - shifted(hc, 1, 0))
        for p in range(c):
            feats += [xf[..., p], shifted(xf[..., p], 0, 1), shifted(xf[..., p], 1, 0)]
            if hf is not None:
                feats.append(hf[..., p])
        f = np.stack(feats, -1).reshape(-1, len(feats))
        y = xc.reshape(-1)
        w = np.round(np.linalg.lstsq(f, y, rcond=None)[0] * 4096) / 4096
        r = y - np.round(f @ w)
        a = act.reshape(-1) + sum(2 * np.abs(e) for e in earlier)
        bucket = np.minimum((np.log2(a + 1) * 2).astype(int), BUCKETS - 1)
        for k in range(BUCKETS):
            sel = bucket == k
            if sel.any():
                total += float(laplace_bits(r[sel], max(float(np.abs(r[sel]).mean()), 0.3)).sum()) + 16
        total += 16 * len(w)
        earlier.append(r)
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.residual_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quality", type=float, default=4.0)
    ap.add_argument("--images", default=",".join(DEFAULT_IMAGES))
    ap.add_argument("--weights", default=str(ROOT / "weights" / "ssvae-rd.safetensors"))
    args = ap.parse_args(argv)
    import torch

    from ..models.io import load_any
    from ..models.rd import rounding_quantizer

    torch.set_num_threads(1)
    model = load_any(Path(args.weights))
    model.eval()
    anchors = {r["image"]: r["bpp"] for r in json.loads((ROOT / "bench" / "results" / "kodak.json").read_text())["rows"]
               if r["codec"] == "webp-lossless"}
    rows = []
    print(f"quality {args.quality}: bpp of x (ideal code length)")
    print("image | lossy prefix | residual given x_hat | total | no x_hat | webp-lossless")
    for name in args.images.split(","):
        x = np.asarray(Image.open(KODAK / name).convert("RGB"))
        xt = torch.from_numpy(x.transpose(2, 0, 1).copy())[None].float() / 255 - 0.5
        with torch.no_grad():
            outs = list(model.top_down(torch.tensor([args.quality]), rounding_quantizer, xt))
        pixels = x.shape[0] * x.shape[1]
        lossy = sum(float(o.bits.sum()) for o in outs) / pixels
        x_hat = np.round((outs[-1].render.clamp(-0.5, 0.5)[0].numpy().transpose(1, 2, 0) + 0.5) * 255)
        res, alone = code_length(x, x_hat) / pixels, code_length(x, None) / pixels
        rows.append((lossy, res, lossy + res, alone, anchors.get(name, float("nan"))))
        print(f"{name} | {lossy:.3f} | {res:.3f} | {lossy + res:.3f} | {alone:.3f} | {rows[-1][-1]:.3f}", flush=True)
    m = np.mean(rows, axis=0)
    print(f"mean | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.3f} | {m[4]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
