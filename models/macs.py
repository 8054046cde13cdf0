"""Count multiply-accumulates of decoding and encoding, per megapixel, with
``torch.utils.flop_counter`` (one MAC = 2 FLOPs of a convolution or matrix product).

    python -m ssvcodec.models.macs [--preset rd|codec] [--size 512x768]
"""
from __future__ import annotations

import argparse
import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import ModelConfig, RDConfig, get_preset
from .rd import RDSSVAE, rounding_quantizer
from .ssvae import SSVAE, build_model


def _macs(fn) -> int:  # type: ignore[no-untyped-def]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops() // 2


def count_macs(model: SSVAE, height: int, width: int) -> dict[str, float]:
    """GMAC per megapixel of: decoding to x from u alone or with more latents (the top-down pass
    is the same length for every level: every level renders a full-resolution image), the
    encoder's posteriors, and each network of the top-down pass."""
    x = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8)
    mp = height * width / 1e6
    lat, ys = model.infer(x)
    res: dict[str, float] = {}
    res["decode (any level; mean image)"] = _macs(lambda: model.decode(lat.u, lat.z[:0])) / 1e9 / mp
    res["encode: posteriors q(u), q(z_k)"] = _macs(lambda: model.infer(x)) / 1e9 / mp
    if hasattr(model.prior_u, "forward") and model.config.prior == "realnvp":
        res["  flow f(v)"] = _macs(lambda: model.prior_u(torch.zeros_like(lat.u))) / 1e9 / mp
    res["  p(y_1 | u)"] = _macs(lambda: model.p_y(0, None, lat.u)) / 1e9 / mp
    for k in range(1, model.levels + 1):
        zp = lat.u if k == 1 else lat.z[k - 2]
        res[f"  p(z_{k} | y_{k}, z_{k-1})"] = _macs(lambda: model.p_z(k, ys[k - 1], zp)) / 1e9 / mp
        name = "x" if k == model.levels else f"y_{k + 1}"
        res[f"  p({name} | y_{k}, z_{k})"] = _macs(lambda: model.p_y(k, ys[k - 1], lat.z[k - 1])) / 1e9 / mp
    return res


def count_rd_macs(model: RDSSVAE, height: int, width: int, subpixel_transitions: bool = True) -> dict[str, float]:
    """GMAC per megapixel of the rate-distortion ssVAE: decoding up to each level and showing
    that level only (the top-down pass to it, then its render head), the same showing every level
    on the way (a progressive decode), and encoding (encoder trunk + the top-down pass; the
    encoder renders no image). ``subpixel_transitions``: count the transitions between levels as
    the codec's format version 6 runs them (sub-pixel convolutions, zero taps included), else as
    transposed convolutions (version 5)."""
    cfg = model.config
    top_down = functools.partial(model.top_down, subpixel_transitions=subpixel_transitions)
    m = cfg.pad_multiple
    height, width = -(-height // m) * m, -(-width // m) * m
    x = torch.rand(1, 3, height, width) - 0.5
    q = torch.tensor([4.0])
    mp = height * width / 1e6
    with torch.no_grad():
        enc = list(top_down(q, rounding_quantizer, x))
    replay = lambda k, latent, mu, sigma, where=None: (enc[k].z_hat, None)  # noqa: E731
    res: dict[str, float] = {}
    for n in range(1, cfg.levels + 1):
        res[f"decode to level {n}"] = _macs(lambda: list(top_down(q, replay, None, size=(height, width), levels=n,
                                                                       render=lambda k: k == n - 1))) / 1e9 / mp
    for n in range(2, cfg.levels + 1):
        res[f"progressive decode, levels 1..{n}"] = _macs(lambda: list(top_down(q, replay, None, size=(height, width),
                                                                                      levels=n))) / 1e9 / mp
    res["encode (all levels)"] = _macs(lambda: list(top_down(q, rounding_quantizer, x, render=False))) / 1e9 / mp
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="codec", help="an ELBO preset, or rd for the rate-distortion model")
    ap.add_argument("--size", default="512x768", help="HxW of the image to count on")
    ap.add_argument("--weights", default=None,
                    help="with --preset rd: count the architecture of these weights (default: the shipped "
                         "weights/ssvae-rd.safetensors if present, else RDConfig())")
    a = ap.parse_args(argv)
    h, w = (int(v) for v in a.size.lower().split("x"))
    if a.preset == "rd":
        from pathlib import Path

        from .io import load_any
        shipped = Path(__file__).resolve().parent.parent / "weights" / "ssvae-rd.safetensors"
        source = Path(a.weights) if a.weights else shipped if shipped.exists() else None
        model: SSVAE | RDSSVAE = (RDSSVAE(RDConfig()) if source is None else load_any(source)).eval()
        print(f"architecture of {source or 'RDConfig()'}")
        counts = count_rd_macs(model, h, w)  # type: ignore[arg-type]
    else:
        cfg: ModelConfig = get_preset(a.preset)
        model = build_model(cfg).eval()
        counts = count_macs(model, h, w)  # type: ignore[arg-type]
    params = sum(p.numel() for p in model.parameters())
    print(f"preset {a.preset}: {params / 1e6:.2f} M parameters, image {h}x{w}")
    for k, v in counts.items():
        print(f"{k:40s} {v:8.2f} GMAC/MP  ({v * 1e3:8.0f} MAC/pixel)")
    print("reference: CompressAI bmshj2018-hyperprior decodes at 43.5 GMAC/MP; ceiling 100 GMAC/MP")


if __name__ == "__main__":
    main()
