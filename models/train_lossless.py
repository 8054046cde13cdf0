"""Train the lossless head (:mod:`models.lossless`) on random crops of the photos, with the RD
model frozen (Mentzer et al. 2020 train their residual coder on a fixed lossy codec the same way).

    python -m ssvcodec.models.train_lossless --out runs/lossless --steps 20000 --threads 1

Each step renders its crops with the frozen RD model at a quality q ~ U(the model's
quality_range) (rounded latents; the exact render that a lossless stream is coded against,
:mod:`models.exact_render`, rounded to 8 bits as the decoder shows it) and minimises the head's
bits of x given that render. The recipe of ``train_rd``: Adam, warm-up then cosine decay,
gradient clipping, EMA weights, checkpoints every ``--ckpt-minutes`` and on SIGTERM, resuming from
``OUT/checkpoint.pt`` or, without one, from ``--init-from`` (default: the shipped head, with its
counters; a larger ``--steps`` then starts a new warm-up + cosine segment, ``--stretch`` moves a
running segment's end: :func:`models.train_rd.plan_segment`); validation rows (EMA,
held-out crops, q = 0 / 4 / 8) every ``--val-every`` steps in ``OUT/log.csv``.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .config import LosslessConfig
from .data import DEFAULT_DATA
from .io import LOSSLESS_WEIGHTS, counters_from_weights, load_any, load_lossless_head
from .lossless import LosslessHead, grow_head
from .rd import RDSSVAE, rounding_quantizer
from .train_rd import (RD_WEIGHTS, PhotoCrops, RankedStream, _atomic_save, ema_update, lr_at, plan_segment, start_weights,
                       validation_crops)

VAL_QUALITIES = (0.0, 4.0, 8.0)


class Rendered(NamedTuple):
    """A training batch: the crops x (uint8), their qualities q, their render and (for a head that
    reads them) the decoder's features."""

    x: torch.Tensor
    q: torch.Tensor
    xhat: torch.Tensor
    features: list[torch.Tensor] | None


class RenderedStream(RankedStream):
    """:class:`RankedStream` whose worker thread also renders each batch (``render(step, x)``), so
    the frozen RD model's forward pass runs on a second core while the head trains on the first:
    the same batches, qualities and renders as rendering in the training loop, in less time."""

    def __init__(self, batches: PhotoCrops, seed: int, depth: int,
                 render: Callable[[int, torch.Tensor], Rendered]) -> None:
        super().__init__(batches, seed, 0, depth)
        self.render = render

    def _draw(self, step: int) -> Rendered:  # type: ignore[override]
        with torch.no_grad():  # grad mode is per thread
            return self.render(step, super()._draw(step))


@torch.no_grad()
def lossy_render(model: RDSSVAE, x: torch.Tensor, q: torch.Tensor, precise: RDSSVAE | None = None,
                 features: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The RD model's final render of ``x`` (uint8, sides multiples of its pad multiple) at
    qualities ``q``, rounded to uint8: with ``precise`` (the model's float64 copy) the exact
    render a lossless stream is coded against (:mod:`models.exact_render`), else the float32
    render of a lossy stream. ``features`` (with ``precise``): receives the exact render's
    features, which a head with ``config.features`` reads."""
    xf = x.float() / 255.0 - 0.5
    *_, last = model.top_down(q, rounding_quantizer, xf, render=lambda k: k == model.n_levels - 1,
                              precise=precise, precise_render=precise is not None)
    assert last.render is not None
    if features is not None:
        if last.features is None:
            raise ValueError("the decoder's features come with the exact render only (pass precise)")
        features.extend(last.features)
    return ((last.render + 0.5) * 255.0).round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def evaluate(head: LosslessHead, rd: RDSSVAE, crops: np.ndarray, q: float, precise: RDSSVAE | None = None) -> float:
    """Bits per pixel of the held-out crops given their render at quality ``q`` (exact with
    ``precise``: :func:`lossy_render`)."""
    x = torch.from_numpy(crops)
    qs = torch.full((len(x),), q)
    feats: list[torch.Tensor] | None = [] if head.config.features else None
    xhat = lossy_render(rd, x, qs, precise, feats)
    bits = head(x, xhat, qs, feats)
    return float(bits.sum()) / (len(x) * x.shape[-2] * x.shape[-1])


def train(args: argparse.Namespace) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    rd = load_any(Path(args.rd_weights))
    if not isinstance(rd, RDSSVAE):
        raise ValueError(f"{args.rd_weights} does not hold rate-distortion weights")
    rd.eval()
    for p in rd.parameters():
        p.requires_grad_(False)
    precise = copy.deepcopy(rd).double()  # the head trains on the exact render the codec codes against
    torch.manual_seed(args.seed)
    counters = {"step": 0, "images": 0, "seconds": 0.0}
    seg = {"start": 0, "end": args.steps}
    init_from = start_weights(args.from_scratch, args.init_from, LOSSLESS_WEIGHTS)
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        cfg = LosslessConfig.from_dict(json.loads(ckpt["config"]))
        head, ema = LosslessHead(cfg), LosslessHead(cfg)
        head.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        counters, seg = json.loads(ckpt["counters"]), json.loads(ckpt["segment"])
        source = f"checkpoint {ckpt_path}"
    elif init_from is not None:
        head = load_lossless_head(init_from).train()
        cfg = head.config
        ema = copy.deepcopy(head)
        counters = counters_from_weights(init_from)
        seg = {"start": counters["step"], "end": counters["step"]}
        source = f"weights {init_from}"
    else:
        cfg = LosslessConfig(**json.loads(args.config)) if args.config else LosslessConfig()
        head = LosslessHead(cfg)
        ema = copy.deepcopy(head)
        source = "scratch"
    step = counters["step"]
    seg = plan_segment(seg, step, args.steps, args.stretch)
    changes = json.loads(args.grow) if args.grow else {}
    grown = bool(changes) and LosslessConfig.from_dict({**cfg.to_dict(), **changes}) != cfg
    if grown:  # (a resumed grown run has nothing to grow)
        head, ema = grow_head(head, changes), grow_head(ema, changes)
        cfg = head.config
        source += f", grown by {changes} (a fresh optimiser)"
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    if ckpt_path.exists() and not grown:
        opt.load_state_dict(ckpt["optimizer"])
    for p in ema.parameters():
        p.requires_grad_(False)
    print(f"start at step {step} from {source}; schedule {seg['start']}..{seg['end']}; "
          f"{sum(p.numel() for p in head.parameters()) / 1e3:.1f} k params; RD weights {args.rd_weights}", flush=True)

    def save(reason: str) -> None:
        _atomic_save({"model": head.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                      "config": json.dumps(cfg.to_dict()), "counters": json.dumps(counters),
                      "segment": json.dumps(seg), "rd_weights": str(args.rd_weights)}, ckpt_path)
        print(f"[{reason}] checkpoint at step {counters['step']} -> {ckpt_path}", flush=True)

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    data_dir = Path(args.data_dir)
    q_lo, q_hi = (float(v) for v in args.q_range.split(",")) if args.q_range else rd.config.quality_range

    def prepare(at: int, x: torch.Tensor) -> Rendered:
        q = torch.from_numpy(np.random.default_rng([args.seed, at, 1]).uniform(q_lo, q_hi, len(x))).float()
        feats: list[torch.Tensor] | None = [] if cfg.features else None
        return Rendered(x, q, lossy_render(rd, x, q, precise, feats), feats)

    crops = PhotoCrops(data_dir, args.crop, args.batch, native=args.native)
    stream = (RenderedStream(crops, args.seed, args.prefetch, prepare) if args.render_ahead
              else RankedStream(crops, args.seed, 0, args.prefetch))
    val = validation_crops(data_dir, args.crop, 16) if args.val_every else None
    log_path = out / "log.csv"
    new_log = not log_path.exists()
    with log_path.open("a", newline="") as log_f:
        writer = csv.DictWriter(log_f, fieldnames=["step", "images", "seconds", "lr", "kind", "q", "bpp"])
        if new_log:
            writer.writeheader()
        deadline = time.time() + args.minutes * 60 if args.minutes else math.inf
        last_ckpt = time.time()
        while step < seg["end"] and time.time() < deadline and not stop["now"]:
            t0 = time.time()
            got = stream.get(step)
            x, q, xhat, feats = got if isinstance(got, Rendered) else prepare(step, got)
            lr = lr_at(step, seg["start"], seg["end"], args.lr, args.lr_min, args.warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            bpp = head(x, xhat, q, feats).mean() / (x.shape[-2] * x.shape[-1])
            opt.zero_grad(set_to_none=True)
            bpp.backward()
            gn = float(torch.nn.utils.clip_grad_norm_(head.parameters(), args.clip))
            if math.isfinite(gn):
                opt.step()
                ema_update(ema, head, step, args.ema)
            step += 1
            counters["step"] = step
            counters["images"] += len(x)
            counters["seconds"] += time.time() - t0
            writer.writerow({"step": step, "images": counters["images"], "seconds": round(counters["seconds"], 2),
                             "lr": f"{lr:.3g}", "kind": "train", "q": round(float(q.mean()), 3),
                             "bpp": round(float(bpp.detach()), 4)})
            if val is not None and step % args.val_every == 0:
                for vq in VAL_QUALITIES:
                    writer.writerow({"step": step, "images": counters["images"], "seconds": round(counters["seconds"], 2),
                                     "kind": "val_ema", "q": vq, "bpp": round(evaluate(ema, rd, val, vq, precise), 4)})
                log_f.flush()
            if step % 200 == 0:
                print(f"step {step} {counters['seconds'] / 60:.1f} min bpp {float(bpp.detach()):.3f} lr {lr:.2e}", flush=True)
            if time.time() - last_ckpt > args.ckpt_minutes * 60:
                log_f.flush()
                save("periodic")
                last_ckpt = time.time()
    stream.close()
    save("stop" if stop["now"] else "end")
    return ckpt_path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run folder (checkpoint.pt, log.csv)")
    ap.add_argument("--rd-weights", default=str(RD_WEIGHTS), help="the frozen RD model whose renders the head codes against")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--config", default="", help="LosslessConfig fields as JSON (new runs only)")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20000, help="planned end of the schedule (a larger value re-warms)")
    ap.add_argument("--stretch", action="store_true",
                    help="while the current segment runs: move its end to --steps (later or earlier) without a new warm-up")
    ap.add_argument("--minutes", type=float, default=0, help="stop after this wall time (0: no limit)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-min", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--init-from", default="", help="head weights to start from without a checkpoint "
                    "(default: the shipped lossless head)")
    ap.add_argument("--from-scratch", action="store_true", help="without a checkpoint: a new head, not the shipped one")
    ap.add_argument("--grow", default="", help='LosslessConfig changes as JSON that grow a trained head without '
                    'changing what it computes (models.lossless.grow_head): \'{"features": 64}\' reads the RD '
                    'model\'s decoder features, \'{"width": 48, "blocks": 3}\' widens and deepens it')
    ap.add_argument("--q-range", default="",
                    help="LO,HI: draw the lossy quality of each crop from U(LO, HI) (default: the RD model's "
                         "quality_range); a head that mostly codes against the default lossless quality can "
                         "be trained near it")
    ap.add_argument("--native", action="store_true",
                    help="BSDS500 crops at its stored resolution (camera noise and fine texture, not halved) "
                         "and no zoom-out: photos as a lossless coder meets them")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--prefetch", type=int, default=4)
    ap.add_argument("--render-ahead", action="store_true",
                    help="render the next batches in the loader's thread, on a core beside the training "
                         "loop's (the same batches and renders, in less wall time; one more core busy)")
    ap.add_argument("--val-every", type=int, default=500, help="EMA validation every N steps (0: never)")
    ap.add_argument("--ckpt-minutes", type=float, default=10.0)
    return ap


def main(argv: list[str] | None = None) -> None:
    train(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
