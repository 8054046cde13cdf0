"""Fit the spatial contexts of chosen levels on frozen rate-distortion weights, with large crops.

    python -m ssvcodec.models.fit_context runs/rd/checkpoint.pt weights/ssvae-rd.safetensors --levels 1

A level's context (``RDConfig.context``) predicts the prior of its later coding passes from the
latents decoded in the earlier ones: the checkerboard's anchors, then the rest (He et al. 2021),
or with ``--passes 4`` the four 2x2 phases in turn (Li, Li & Lu 2023). Trained on 128x128 crops,
level 1's latent grid (stride 32) is 4x4: its statistics are those of borders, and a context
learnt there does not carry over to whole photos (docs/training.md, session 18). So :mod:`models.train_rd` freezes such contexts, and this
command fits them afterwards, everything else frozen: only the rate of the fitted levels moves (the
latents and renders do not depend on the context; the decoder's rounding offsets do, which leaves
the quantization error's spread unchanged). A level without a context, or with fewer passes than
``--passes``, gets one grown in first (:func:`models.grow.grow`: it starts as the identity), and
every context network of the fitted levels is fitted.

The crops come from the training photos large enough for ``--crop`` (the lossless wallpapers at 512);
their encoder features are computed once and cached, with one quality q ~ U(quality range) per
crop. The loss is the mean over crops of the fitted levels' bits relative to their bits before the
fit, so every rate counts alike, as in a BD-rate. Held-out crops (another seed) report the saving.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import CONTEXT_PASSES
from .data import DEFAULT_DATA, CropSampler, load_photos, photo_files
from .grow import grow
from .rd import RDSSVAE, rounding_quantizer, training_quantizer

#: a context whose level's latent grid on a training crop is smaller than this (per side) is frozen
#: in ``train_rd`` and fitted here instead
MIN_CONTEXT_GRID = 8


def small_grid_contexts(model: RDSSVAE, crop: int) -> list[int]:
    """The levels (0-based) whose context sees a latent grid under ``MIN_CONTEXT_GRID`` on
    ``crop`` x ``crop`` training crops."""
    cfg = model.config
    return [k for k in range(cfg.levels) if model.levels[k].has_context and crop // cfg.latent_strides[k] < MIN_CONTEXT_GRID]


def context_parameters(model: RDSSVAE, levels: list[int]) -> list[Tensor]:
    """The context network's parameters of the given levels (0-based)."""
    return [p for k in levels for n, p in model.levels[k].named_parameters() if n.startswith("ctx_")]


class CachedFeatures:
    """Encoder features of a fixed set of crops, each at its own quality, computed once."""

    def __init__(self, model: RDSSVAE, crops: np.ndarray, qualities: np.ndarray, batch: int = 8) -> None:
        self.q = torch.tensor(qualities, dtype=torch.float32)
        self.size = crops.shape[-2:]
        parts: list[dict[int, Tensor]] = []
        with torch.no_grad():
            for i in range(0, len(crops), batch):
                x = torch.from_numpy(crops[i:i + batch]).float() / 255 - 0.5
                parts.append(model.encoder_features(x, model.embed(self.q[i:i + batch])))
        self.feats = {s: torch.cat([p[s] for p in parts]) for s in parts[0]}

    def __len__(self) -> int:
        return len(self.q)

    def bits(self, model: RDSSVAE, idx: Tensor, levels: list[int], train: bool) -> Tensor:
        """Per crop of ``idx``: the bits of ``levels`` (uniform noise in training, rounding
        otherwise), through the model's own top-down pass on the cached features."""
        feats = {s: f[idx] for s, f in self.feats.items()}
        encoder = model.encoder_features
        model.encoder_features = lambda x, emb: feats  # type: ignore[method-assign]
        try:
            x = torch.zeros(len(idx), 3, *self.size)
            quant = training_quantizer if train else rounding_quantizer
            total = torch.zeros(len(idx))
            for o in model.top_down(self.q[idx], quant, x, levels=max(levels) + 1, render=False):
                if o.k in levels:
                    total = total + o.bits.flatten(1).sum(1)
        finally:
            model.encoder_features = encoder  # type: ignore[method-assign]
        return total


def sample_crops(data_dir: Path, crop: int, n: int, seed: int, q_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random crops of the training photos whose sides reach ``crop``, and a q for each."""
    photos = [p for p in load_photos(photo_files(data_dir, "train")) if min(p.shape[1:]) >= crop]
    if not photos:
        raise SystemExit(f"no training photo has sides of {crop} pixels")
    rng = np.random.default_rng(seed)
    return CropSampler(photos, crop, 2.0, by_area=True).batch(rng, n), rng.uniform(*q_range, n)


def fit(model: RDSSVAE, train: CachedFeatures, held_out: CachedFeatures, levels: list[int], steps: int,
        batch: int, lr: float, log: Any = print) -> dict[str, Any]:
    """Adam on the contexts of ``levels`` (0-based), cosine-decayed from ``lr``; returns the
    held-out bits of those levels before and after, by quality."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    params = context_parameters(model, levels)
    for p in params:
        p.requires_grad_(True)
    with torch.no_grad():
        base = train.bits(model, torch.arange(len(train)), levels, train=False)
        before = held_out.bits(model, torch.arange(len(held_out)), levels, train=False)
    opt = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(0)
    start = time.time()
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * s / steps))
        idx = torch.from_numpy(rng.choice(len(train), batch, replace=False))
        loss = (train.bits(model, idx, levels, train=True) / base[idx].clamp_min(1.0)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s % 100 == 0 or s == steps - 1:
            log(f"step {s} relative bits {loss.item():.4f} ({time.time() - start:.0f} s)")
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        after = held_out.bits(model, torch.arange(len(held_out)), levels, train=False)
    lo_q, hi_q = model.config.quality_range
    edges = np.linspace(lo_q, hi_q + 1e-6, 5)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (held_out.q >= lo) & (held_out.q < hi)
        rows.append({"q": [round(float(lo), 2), round(float(hi), 2)], "crops": int(m.sum()),
                     "change_pct": round(100 * float(after[m].sum() / before[m].sum() - 1), 2)})
    return {"levels": [k + 1 for k in levels], "held_out_change_pct": round(100 * float(after.sum() / before.sum() - 1), 2),
            "by_quality": rows}


def main(argv: list[str] | None = None) -> None:
    from .export import load_rd_checkpoint
    from .io import load_any, read_meta, save_weights

    ap = argparse.ArgumentParser(prog="python -m ssvcodec.models.fit_context", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="RD weights (.safetensors) or a train_rd checkpoint (.pt: its EMA weights)")
    ap.add_argument("out", type=Path, help="destination .safetensors (a .json beside it)")
    ap.add_argument("--levels", default="1", help="1-based levels whose context to fit, e.g. 1 or 1,2")
    ap.add_argument("--passes", type=int, choices=(2, 4), default=2,
                    help="coding passes of the fitted levels at least (2: checkerboard, 4: the 2x2 phases)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--crops", type=int, default=240, help="training crops (their features are cached)")
    ap.add_argument("--held-out", type=int, default=48)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--meta", default="{}", help="extra JSON metadata for the model card")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.source.suffix == ".pt":
        model, meta = load_rd_checkpoint(a.source)
    else:
        loaded, meta = load_any(a.source), read_meta(a.source)
        if not isinstance(loaded, RDSSVAE):
            raise SystemExit(f"{a.source}: not rate-distortion weights")
        model = loaded
    levels = sorted({int(v) - 1 for v in a.levels.split(",")})
    if not all(0 <= k < model.config.levels for k in levels):
        raise SystemExit(f"--levels: this model has levels 1..{model.config.levels}")
    context = list(model.config.context or [0] * model.config.levels)
    want = CONTEXT_PASSES.index(a.passes)
    if any(context[k] < want for k in levels):
        model = grow(model, {"context": [max(c, want) if k in levels else c for k, c in enumerate(context)]})
    start = time.time()
    q_range = model.config.quality_range
    train = CachedFeatures(model, *sample_crops(a.data_dir, a.crop, a.crops, 1, q_range))
    held_out = CachedFeatures(model, *sample_crops(a.data_dir, a.crop, a.held_out, 2, q_range))
    print(f"cached {len(train)} + {len(held_out)} crops of {a.crop} in {time.time() - start:.0f} s", flush=True)
    result = fit(model, train, held_out, levels, a.steps, a.batch, a.lr, log=lambda m: print(m, flush=True))
    result.update({"crop": a.crop, "crops": a.crops, "steps": a.steps, "batch": a.batch, "lr": a.lr,
                   "seconds": round(time.time() - start, 1)})
    print(json.dumps(result), flush=True)
    meta = {k: v for k, v in meta.items() if k not in ("config", "card_check")}
    meta.update({"context_fit": result, **json.loads(a.meta)})
    save_weights(model, a.out, meta)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
