"""How many latent channels of each level carry information: ``python -m ssvcodec.bench.latent_usage
[WEIGHTS ...] [--qualities -2,4,9] [--images kodim23.png]``.

Each model (shipped ``.safetensors`` or a ``models.train_rd`` checkpoint's EMA weights) codes the
images through :meth:`~models.rd.RDSSVAE.top_down` with the codec's rounding, and the ideal bits of
each rounded latent under its prior (:func:`~models.rd_layers.gaussian_bits`) are summed per
channel. A channel is *dead* at a quality if it carries under ``--dead`` (default 0.1 %) of its
level's bits there: its latents sit at the prior's mean and the decoder learns nothing from them.
Printed per model, quality and level: the level's bits per pixel, the number of dead channels, and
those dead at every quality. This is the measurement behind docs/training.md, session 17 (dead
channels at every level, and why a widened latent added none).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .probe import KODAK, load_model, parse_qualities


def channel_bits(model, x, q: float) -> list[np.ndarray]:  # noqa: ANN001
    """Per level, the bits of each latent channel of image ``x`` ((1, 3, H, W) in [-1/2, 1/2],
    sides multiples of the model's pad_multiple) at quality ``q``."""
    import torch

    from ..models.rd import rounding_quantizer

    bits: dict[int, torch.Tensor] = {}

    def quantize(k: int, latent, mu, sigma, where=None):  # noqa: ANN001, ANN202
        z_hat, b = rounding_quantizer(k, latent, mu, sigma, where)
        part = b if where is None else torch.where(where.expand_as(b), b, 0.0)
        bits[k] = bits.get(k, 0.0) + part.sum(dim=(0, 2, 3))
        return z_hat, b

    with torch.no_grad():
        for _ in model.top_down(torch.tensor([float(q)]), quantize, x, render=False):
            pass
    return [bits[k].double().numpy() for k in sorted(bits)]


def _image(name: str, multiple: int):  # -> torch.Tensor
    import torch

    a = np.asarray(Image.open(KODAK / name).convert("RGB"))
    h, w = a.shape[0] // multiple * multiple, a.shape[1] // multiple * multiple
    return torch.from_numpy(a[:h, :w].transpose(2, 0, 1).copy())[None].float() / 255 - 0.5


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.latent_usage", description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="*", help="shipped weights or checkpoint.pt (default: the shipped RD weights)")
    ap.add_argument("--qualities", default="-2,4,9", help="comma-separated q, or LO:HI for every integer")
    ap.add_argument("--images", default="kodim23.png", help="comma-separated Kodak file names")
    ap.add_argument("--dead", type=float, default=0.001, help="a channel is dead below this share of its level's bits")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    paths = [Path(w) for w in args.weights] or [Path(__file__).resolve().parent.parent / "weights" / "ssvae-rd.safetensors"]
    qualities = parse_qualities(args.qualities)
    for path in paths:
        model = load_model(path)
        images = [_image(n, model.config.pad_multiple) for n in args.images.split(",")]
        pixels = sum(x.shape[-2] * x.shape[-1] for x in images)
        dead_always: list[set[int]] | None = None
        print(f"{path}:")
        for q in qualities:
            per_level = [sum(b) for b in zip(*(channel_bits(model, x, q) for x in images))]
            dead = [set(np.flatnonzero(b < args.dead * b.sum()).tolist()) for b in per_level]
            dead_always = dead if dead_always is None else [a & d for a, d in zip(dead_always, dead)]
            print(f"  q = {q:g}: " + "; ".join(f"level {k + 1} {b.sum() / pixels:.4f} bpp, {len(d)}/{len(b)} dead"
                                               for k, (b, d) in enumerate(zip(per_level, dead))))
        assert dead_always is not None
        for k, d in enumerate(dead_always):
            print(f"  level {k + 1}: dead at every quality: {len(d)} channels {sorted(d)}")


if __name__ == "__main__":
    main(sys.argv[1:])
