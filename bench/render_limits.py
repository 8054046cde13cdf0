"""Where the RD model's level-3 render is limited: ``python -m ssvcodec.bench.render_limits
[--weights W] [--steps N]``.

Three measurements (docs/training.md, session 6), one thread:

1. ``quantizer``: level-3 PSNR on six Kodak images at q = 0, 4, 8 with the codec's rounding,
   with the encoder's latents passed unquantized, and with uniform noise of one step (training's
   rate proxy). If rounding costs little, the rates of high q buy little and the transforms limit.
2. ``head``: on a 256x256 crop of kodim23 at q = 8, Adam on the top-down state itself under the
   level-3 render head (MSE only): how far the head alone could go from a better state.
3. ``latents``: on the same crop, Adam on the level latents themselves (straight-through
   rounding, rate under the priors + lambda * level-3 MSE): the encoder's amortization gap, a
   lower bound (rounding hides moves under half a step).
4. ``path``: on the same crop, Adam on the unquantized latents under the level-3 MSE alone (no
   rate, no rounding): how far the latents -> state path could go with a perfect encoder, to set
   beside measurement 2's state. Near 2: the encoder limits; near the encoder's PSNR: the latent
   channels and the merges do.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
KODAK = ROOT.parent / "shared" / "data" / "kodak"
IMAGES = ("kodim01.png", "kodim04.png", "kodim07.png", "kodim13.png", "kodim19.png", "kodim23.png")


def _load(name: str, box: tuple[int, int, int, int] | None = None):  # -> torch.Tensor in [-1/2, 1/2]
    import torch
    x = np.asarray(Image.open(KODAK / name).convert("RGB"))
    if box is not None:
        x = x[box[0]:box[1], box[2]:box[3]]
    return torch.from_numpy(x.transpose(2, 0, 1).copy())[None].float() / 255 - 0.5


def _psnr(render, x) -> float:  # noqa: ANN001 - tensors
    return 10 * math.log10(1 / float((render.clamp(-0.5, 0.5) - x).pow(2).mean()))


def quantizer_cost(model) -> None:  # noqa: ANN001 - an RDSSVAE
    """Measurement 1 (module docstring)."""
    import torch

    from ..models.rd import rounding_quantizer

    def unquantized(k, latent, mu, sigma, where=None):  # noqa: ANN001, ANN202
        return latent, None

    def noisy(k, latent, mu, sigma, where=None):  # noqa: ANN001, ANN202
        return latent + torch.rand_like(latent) - 0.5, None

    xs = [_load(n) for n in IMAGES]
    print("1. level-3 PSNR (mean over " + ", ".join(IMAGES) + ")")
    with torch.no_grad():
        for q in (0.0, 4.0, 8.0):
            row = []
            for name, quant in (("rounded", rounding_quantizer), ("unquantized", unquantized), ("noise", noisy)):
                ps = [_psnr(list(model.top_down(torch.tensor([q]), quant, x))[-1].render, x) for x in xs]
                row.append(f"{name} {np.mean(ps):.2f}")
            print(f"   q = {q:.0f}: " + ", ".join(row), flush=True)


def head_ceiling(model, x, steps: int) -> None:  # noqa: ANN001
    """Measurement 2 (module docstring)."""
    import torch

    from ..models.rd import rounding_quantizer
    q = torch.tensor([8.0])
    last = model.levels[-1]
    with torch.no_grad():
        emb = model.embed(q)
        states = []
        update = last.update
        last.update = lambda z, ctx, e: states.append(update(z, ctx, e)) or states[-1]  # type: ignore[method-assign]
        out = list(model.top_down(q, rounding_quantizer, x))[-1]
        del last.update
    state = states[0].clone().requires_grad_(True)
    opt = torch.optim.Adam([state], lr=0.02)
    start = _psnr(out.render, x)
    for _ in range(steps):
        loss = (last.render(state, emb) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        print(f"2. head alone, q = 8: {start:.2f} dB from the model's state, {_psnr(last.render(state, emb), x):.2f} "
              f"after {steps} Adam steps on the state", flush=True)


def latent_gap(model, x, steps: int) -> None:  # noqa: ANN001
    """Measurement 3 (module docstring)."""
    import torch

    from ..models.rd import rounding_quantizer
    from ..models.rd_layers import gaussian_bits
    q = torch.tensor([8.0])
    lam = float(model.lam(q)) * 255.0 ** 2
    pixels = x.shape[-2] * x.shape[-1]
    grabbed: list = []

    def grab(k, latent, mu, sigma, where=None):  # noqa: ANN001, ANN202
        if len(grabbed) == k:  # a level with a checkerboard context calls twice with one latent
            grabbed.append(latent.detach().clone())
        return rounding_quantizer(k, latent, mu, sigma)

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            outs = list(model.top_down(q, lambda k, lat, mu, s, where=None: rounding_quantizer(k, params[k], mu, s), x))
        return sum(float(o.bits.sum()) for o in outs) / pixels, _psnr(outs[-1].render, x)

    with torch.no_grad():
        list(model.top_down(q, grab, x))
    params = [g.requires_grad_(True) for g in grabbed]
    before = evaluate()
    opt = torch.optim.Adam(params, lr=0.05)

    def straight_through(k, latent, mu, sigma, where=None):  # noqa: ANN001, ANN202
        z = params[k]
        bits = gaussian_bits(z + torch.empty_like(z).uniform_(-0.5, 0.5), mu, sigma)
        return z + (mu + torch.round(z - mu) - z).detach(), bits

    for _ in range(steps):
        outs = list(model.top_down(q, straight_through, x))
        loss = sum(o.bits.sum() for o in outs) / pixels + lam * (outs[-1].render - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    print(f"3. latents, q = 8: {before[1]:.2f} dB at {before[0]:.3f} bpp from the encoder, {after[1]:.2f} dB at "
          f"{after[0]:.3f} bpp after {steps} Adam steps on the latents", flush=True)


def path_ceiling(model, x, steps: int) -> None:  # noqa: ANN001
    """Measurement 4 (module docstring)."""
    import torch

    q = torch.tensor([8.0])
    grabbed: list = []

    def grab(k, latent, mu, sigma, where=None):  # noqa: ANN001, ANN202
        if len(grabbed) == k:  # a level with a checkerboard context calls twice with one latent
            grabbed.append(latent.detach().clone())
        return latent, None

    with torch.no_grad():
        start = _psnr(list(model.top_down(q, grab, x))[-1].render, x)
    params = [g.requires_grad_(True) for g in grabbed]
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(steps):
        render = list(model.top_down(q, lambda k, lat, mu, s, where=None: (params[k], None), x))[-1].render
        loss = (render - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = _psnr(list(model.top_down(q, lambda k, lat, mu, s, where=None: (params[k], None), x))[-1].render, x)
    print(f"4. latents -> state path, q = 8, unquantized, MSE only: {start:.2f} dB from the encoder, {end:.2f} "
          f"after {steps} Adam steps on the latents", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.render_limits", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "ssvae-rd.safetensors"))
    ap.add_argument("--steps", type=int, default=200, help="Adam steps of measurements 2 and 3")
    args = ap.parse_args(argv)
    import torch

    from ..models.io import load_any
    torch.set_num_threads(1)
    model = load_any(Path(args.weights))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    quantizer_cost(model)
    crop = _load("kodim23.png", (128, 384, 256, 512))
    head_ceiling(model, crop, args.steps)
    latent_gap(model, crop, args.steps)
    path_ceiling(model, crop, args.steps)


if __name__ == "__main__":
    main(sys.argv[1:])
