"""Train the rate-distortion ssVAE (:mod:`models.rd`) on random crops of the photos.

    python -m ssvcodec.models.train_rd --out runs/rd --steps 20000 --threads 1

Recipe (measured on this CPU, see the RD issue and ``../shared/design/ssvae-codec.md`` §3.3):
Adam, a linear warm-up then cosine decay from ``--lr`` to ``--lr-min`` over the planned
``--steps``, gradient clipping, EMA weights (``--ema``), a quality q ~ U(quality_range) per crop (one
lambda-conditioned model for every rate), the distortion of truncation level k weighted by the
config's w_k (``--level-weights`` replaces them, also on a resumed run), each crop's loss weighted
by about 1 / its rate with ``--q-weight`` (:func:`models.rd.rate_normalised_weight`), crops drawn with
probability proportional to each photo's area (the clean wallpaper photos hold most pixels). A level's
checkerboard context whose latent grid on a training crop is under 8x8 (level 1 at 128 pixels) is
frozen: :mod:`models.fit_context` fits it on large crops, everything else frozen.

Resuming: re-running with the same ``--out`` continues from ``OUT/checkpoint.pt`` (model, EMA,
optimiser, schedule, counters; batch s is drawn from its own seed [seed, s, rank], so the data
continue exactly). Asking for more ``--steps`` than the checkpoint planned starts a new schedule
segment from the current step: warm-up again, then cosine to the new end ("re-warm when you
extend"); with ``--stretch`` a segment still running keeps its warm-up and only its cosine is
moved to the new end, later or earlier (a machine slower than planned). Without a checkpoint, ``--init-from`` (default: the shipped RD weights,
if present) starts from committed EMA weights with their counters. Checkpoints every ``--ckpt-minutes`` and on
SIGTERM/SIGINT. Logs every step to ``OUT/log.csv`` (bits per pixel and PSNR per level, lambda, lr,
wall time) and validation rows (EMA weights, held-out crops, fixed q) every ``--val-every`` steps.

Runs unchanged under ``torchrun --nproc_per_node N`` (DDP: gloo on CPU, nccl on GPU); each rank
draws its own crops and rank 0 logs and checkpoints. There is no ``torch.compile`` option: with
torch 2.13 a compiled model outside DDP computes the right loss but gives its level-1 and level-2
render heads no gradient (docs/training.md, session 17).
"""
from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .config import RDConfig
from .data import DEFAULT_DATA, CropSampler, load_photos, photo_files
from .grow import add_level_changes, grow, remap_optimizer_state
from .fit_context import MIN_CONTEXT_GRID, context_parameters, small_grid_contexts
from .rd import RDSSVAE, psnr_from_mse, rate_normalised_weight, rate_warmup_weights
from .train import BatchStream

#: latent channels of a residual level grown by ``--grow residual-level``: the whole 4x4 x RGB block
RESIDUAL_CHANNELS = 48
RD_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "ssvae-rd.safetensors"
VAL_QUALITIES = (1.0, 4.0, 7.0)


def start_weights(from_scratch: bool, init_from: str, shipped: Path) -> Path | None:
    """The committed weights a run without a checkpoint starts from: ``--init-from`` if given,
    else the shipped ones if present; none with ``--from-scratch``."""
    if from_scratch:
        return None
    if init_from:
        return Path(init_from)
    return shipped if shipped.exists() else None


def lr_at(step: int, seg_start: int, seg_end: int, lr: float, lr_min: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps from the segment's start, then cosine decay from
    ``lr`` to ``lr_min`` at ``seg_end`` (Loshchilov & Hutter 2017); ``lr_min`` afterwards."""
    i = step - seg_start
    if i < warmup:
        return lr * (i + 1) / warmup
    span = max(1, seg_end - seg_start - warmup)
    t = min(1.0, (i - warmup) / span)
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * t))


def plan_segment(seg: dict[str, int], step: int, steps: int, stretch: bool) -> dict[str, int]:
    """The schedule segment (start, end: :func:`lr_at`) a run at ``step`` continues on, asked for
    ``--steps`` = ``steps``: with ``stretch`` and a segment still running, the same warm-up with its
    cosine moved to the new end (later or earlier); else a larger ``steps`` starts a new warm-up +
    cosine segment here ("re-warm when you extend"), and a smaller one changes nothing."""
    if stretch and step < seg["end"] and steps != seg["end"]:
        if steps <= step:
            raise SystemExit(f"--stretch --steps {steps}: the run is already at step {step}")
        return {"start": seg["start"], "end": steps}
    if steps > seg["end"]:
        return {"start": step, "end": steps}
    return seg


class PhotoCrops:
    """Crops of the training photos for :class:`~models.train.BatchStream`."""

    def __init__(self, data_dir: Path, crop: int, batch: int, native: bool = False) -> None:
        """``native``: BSDS500 at its stored resolution and crops without zoom-out
        (:func:`models.data.photo_training_size`)."""
        files = photo_files(data_dir, "train")
        if not files:
            raise FileNotFoundError(f"no training photos under {data_dir / 'photos'}")
        self.sampler = CropSampler(load_photos(files, native=native), crop, 1.0 if native else 1.5, by_area=True)
        self.batch = batch

    def next(self, rng: np.random.Generator) -> np.ndarray:
        return self.sampler.batch(rng, self.batch)


class RankedStream(BatchStream):
    """BatchStream whose batch ``s`` of rank ``r`` has the seed [seed, s, r]."""

    def __init__(self, batches: PhotoCrops, seed: int, rank: int, depth: int = 4, pin: bool = False) -> None:
        super().__init__(batches, seed, depth, pin)  # type: ignore[arg-type]
        self.rank = rank

    def _draw(self, step: int) -> torch.Tensor:
        x = torch.from_numpy(self.batches.next(np.random.default_rng([self.seed, step, self.rank])))
        return x.pin_memory() if self.pin else x


def validation_crops(data_dir: Path, crop: int, n: int = 24) -> np.ndarray:
    """Fixed held-out crops (BSDS500 val, never trained on)."""
    return CropSampler(load_photos(photo_files(data_dir, "val")), crop, 1.0).batch(np.random.default_rng(1234), n)


@torch.no_grad()
def evaluate(model: RDSSVAE, crops: np.ndarray, q: float, device: torch.device) -> dict[str, float]:
    """Rounded latents (test-time quantization): mean bpp and PSNR per level at quality ``q``."""
    model.eval()
    x = torch.from_numpy(crops).to(device)
    t = model(x, torch.full((len(x),), q, device=device))
    model.train()
    out: dict[str, float] = {}
    for k in range(model.n_levels):
        out[f"bpp_{k + 1}"] = float(t[f"bpp_{k + 1}"].mean())
        out[f"psnr_{k + 1}"] = psnr_from_mse(float(t[f"mse_{k + 1}"].mean()))
    return out


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """EMA of the weights, its decay ramped up over the first steps (min(decay, (1+t)/(10+t)), as
    TensorFlow's ExponentialMovingAverage with num_updates)."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - d)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _hardware(device: torch.device) -> str:
    from .io import cpu_name
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def widened(current: tuple[float, float], target: tuple[float, float], delta: float) -> tuple[float, float]:
    """``current`` moved by at most ``delta`` at each end towards ``target`` (a curriculum over the
    trained quality range, so that every new quality is near one the model already renders)."""
    lo = max(target[0], current[0] - delta) if target[0] < current[0] else min(target[0], current[0] + delta)
    hi = min(target[1], current[1] + delta) if target[1] > current[1] else max(target[1], current[1] - delta)
    return (round(lo, 6), round(hi, 6))  # no drift from summing deltas


def train(args: argparse.Namespace) -> Path:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = torch.device(args.device)
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    data_dir = Path(args.data_dir)
    torch.manual_seed(args.seed)
    counters = {"step": 0, "images": 0, "seconds": 0.0}
    seg = {"start": 0, "end": args.steps}
    init_from = start_weights(args.from_scratch, args.init_from, RD_WEIGHTS)
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        cfg = RDConfig.from_dict(json.loads(ckpt["config"]))
        model = RDSSVAE(cfg)
        model.load_state_dict(ckpt["model"])
        ema = RDSSVAE(cfg)
        ema.load_state_dict(ckpt["ema"])
        counters = json.loads(ckpt["counters"])
        seg = json.loads(ckpt["segment"])
        if args.q_weight is None:  # a resumed run keeps its loss weighting unless told otherwise
            args.q_weight, args.q_weight_ref = json.loads(ckpt.get("run", "{}")).get("q_weight", [0.0, args.q_weight_ref])
        if "torch_rng" in ckpt:
            torch.set_rng_state(ckpt["torch_rng"])
        source = f"checkpoint {ckpt_path}"
    elif init_from is not None:
        from .io import counters_from_weights, load_any
        model = load_any(init_from)  # type: ignore[assignment]
        assert isinstance(model, RDSSVAE)
        cfg = model.config
        ema = copy.deepcopy(model)
        counters = counters_from_weights(init_from)
        seg = {"start": counters["step"], "end": counters["step"]}
        source = f"weights {init_from}"
    else:
        cfg = RDConfig(**json.loads(args.config)) if args.config else RDConfig()
        model = RDSSVAE(cfg)
        ema = copy.deepcopy(model)
        source = "scratch"
    opt_state = ckpt["optimizer"] if ckpt_path.exists() else None
    if args.q_weight is None:
        args.q_weight = 0.0
    if args.grow == "residual-level":  # a residual fourth level (models.grow.add_level_changes), once
        changes = {} if cfg.residual_last else add_level_changes(cfg, RESIDUAL_CHANNELS, 0.5, residual=True)
    else:
        changes = json.loads(args.grow) if args.grow else {}
    if changes and RDConfig.from_dict({**cfg.to_dict(), **changes}) != cfg:  # a resumed grown run: nothing to do
        old = model
        model, ema = grow(model, changes), grow(ema, changes)
        cfg = model.config
        if opt_state is not None:
            opt_state = remap_optimizer_state(opt_state, old, model)
        source += f", grown by {changes}"
    rate_warmup = tuple(int(v) for v in args.rate_warmup.split(":")) if args.rate_warmup else None
    if rate_warmup is not None and (len(rate_warmup) != 3 or not 1 <= rate_warmup[0] <= cfg.levels
                                    or rate_warmup[2] <= rate_warmup[1]):
        raise SystemExit(f"--rate-warmup LEVEL:START:END with 1 <= LEVEL <= {cfg.levels} and START < END, "
                         f"got {args.rate_warmup!r}")
    q_target = tuple(float(v) for v in args.q_range.split(",")) if args.q_range else cfg.quality_range
    if args.q_range and not args.q_widen:  # the model then declares the range it is trained on (the codec accepts it)
        cfg = dataclasses.replace(cfg, quality_range=q_target)
        model.config = ema.config = cfg
    if args.level_weights:
        cfg = dataclasses.replace(cfg, level_weights=tuple(float(v) for v in args.level_weights.split(",")))
        model.config = ema.config = cfg
    counters.setdefault("core_seconds", counters["seconds"])  # runs before it was counted used one thread
    step = counters["step"]
    seg = plan_segment(seg, step, args.steps, args.stretch)
    model.to(device).train()
    ema.to(device).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    frozen = small_grid_contexts(model, args.crop)
    for p in context_parameters(model, frozen):  # border statistics: fitted on large crops by models.fit_context
        p.requires_grad_(False)
    only = [t for t in args.train_only.split(",") if t]
    if only:
        trained = [n for n, p in model.named_parameters() if any(n.startswith(t) for t in only)]
        if not trained:
            raise SystemExit(f"--train-only {args.train_only}: no parameter name starts with it")
        for n, p in model.named_parameters():
            if not any(n.startswith(t) for t in only):
                p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    net: torch.nn.Module = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if rank == 0:
        print(f"start at step {step} from {source}; schedule {seg['start']}..{seg['end']}; "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params; world {world}", flush=True)
        if frozen:
            print(f"the context of level(s) {[k + 1 for k in frozen]} stays frozen: its latent grid on {args.crop}-pixel "
                  f"crops is under {MIN_CONTEXT_GRID} a side (python -m ssvcodec.models.fit_context fits it)", flush=True)

    def save(reason: str) -> None:
        if rank != 0:
            return
        _atomic_save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                      "config": json.dumps(cfg.to_dict()), "counters": json.dumps(counters),
                      "segment": json.dumps(seg), "torch_rng": torch.get_rng_state(),
                      "grad_norms": json.dumps(norms), "run": json.dumps(run_info)}, ckpt_path)
        tqdm.write(f"[{reason}] checkpoint at step {counters['step']} -> {ckpt_path}")

    run_info = {"threads": args.threads or torch.get_num_threads(), "world": world, "crop": args.crop,
                "batch_per_process": args.batch, "lr": args.lr, "lr_min": args.lr_min, "warmup": args.warmup,
                "ema": args.ema, "clip": args.clip,
                "q_weight": [args.q_weight, args.q_weight_ref], "rate_warmup": rate_warmup, "train_only": only,
                "data": "photos (bsds500 train+test, sunhays80, wallpapers)",
                "device": str(device), "hardware": _hardware(device), "schedule": seg}
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    stream = RankedStream(PhotoCrops(data_dir, args.crop, args.batch), args.seed, rank, args.prefetch,
                          pin=device.type == "cuda")
    val = validation_crops(data_dir, args.crop) if args.val_every and rank == 0 else None
    log_path = out / "log.csv"
    new_log = not log_path.exists()
    log_f = log_path.open("a", newline="") if rank == 0 else None
    writer: csv.DictWriter | None = None
    fields = (["step", "images", "seconds", "lr", "loss", "grad_norm", "skipped", "kind", "q"]
              + [f"bpp_{k + 1}" for k in range(cfg.levels)] + [f"psnr_{k + 1}" for k in range(cfg.levels)])
    if log_f is not None:
        writer = csv.DictWriter(log_f, fieldnames=fields)
        if new_log:
            writer.writeheader()
    deadline = time.time() + args.minutes * 60 if args.minutes else math.inf
    last_ckpt = time.time()
    end = min(args.stop_at, seg["end"]) if args.stop_at else seg["end"]
    bar = tqdm(total=end, initial=step, unit="step", dynamic_ncols=True, disable=rank != 0 or not args.progress)
    norms: list[float] = json.loads(ckpt.get("grad_norms", "[]")) if ckpt_path.exists() else []
    skipped = 0
    while step < end and time.time() < deadline:
        if distributed:  # every rank must stop at the same step
            flag = torch.tensor([float(stop["now"])], device=device)
            dist.all_reduce(flag)
            if flag.item() > 0:
                break
        elif stop["now"]:
            break
        t0 = time.time()
        x = stream.get(step).to(device, non_blocking=True)
        if cfg.quality_range != q_target:
            cfg = dataclasses.replace(cfg, quality_range=widened(cfg.quality_range, q_target, args.q_widen / 1000))
            model.config = ema.config = cfg
        q_lo, q_hi = cfg.quality_range
        q = torch.from_numpy(np.random.default_rng([args.seed, step, rank, 1]).uniform(q_lo, q_hi, len(x))).float()
        lr = lr_at(step, seg["start"], seg["end"], args.lr, args.lr_min, args.warmup)
        # spike guard (lossy-vae): a gradient far above the recent median gets a small step and no EMA update
        gn_ref = float(np.median(norms)) if len(norms) >= 20 else math.inf
        for g in opt.param_groups:
            g["lr"] = lr
        weight = rate_normalised_weight(q, args.q_weight, args.q_weight_ref) if args.q_weight else None
        terms = net(x, q.to(device), None if weight is None else weight.to(device),
                    rate_warmup_weights(cfg.levels, step, rate_warmup))
        loss = terms["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip))
        loss_v = float(loss.detach())
        ok = math.isfinite(gn) and math.isfinite(loss_v)
        spike = ok and gn > 10 * gn_ref
        if spike:
            for g in opt.param_groups:
                g["lr"] = lr * 0.1
        if ok:
            opt.step()
            norms = (norms + [gn])[-100:]
        else:
            skipped += 1
        if ok and not spike:
            ema_update(ema, model, step, args.ema)
        step += 1
        counters["step"] = step
        counters["images"] += len(x) * world
        dt = time.time() - t0
        counters["seconds"] += dt
        counters["core_seconds"] += dt * world * (args.threads or torch.get_num_threads())
        if writer is not None:
            row: dict[str, Any] = {"step": step, "images": counters["images"], "seconds": round(counters["seconds"], 2),
                                   "lr": f"{lr:.3g}", "loss": round(loss_v, 4), "grad_norm": round(gn, 3),
                                   "skipped": int(not ok) + 2 * int(spike), "kind": "train", "q": round(float(q.mean()), 3)}
            for k in range(cfg.levels):
                row[f"bpp_{k + 1}"] = round(float(terms[f"bpp_{k + 1}"].detach().mean()), 4)
                row[f"psnr_{k + 1}"] = round(psnr_from_mse(float(terms[f"mse_{k + 1}"].detach().mean())), 3)
            writer.writerow(row)
            if val is not None and step % args.val_every == 0:
                for vq in VAL_QUALITIES:
                    r = evaluate(ema, val, vq, device)
                    writer.writerow({"step": step, "images": counters["images"], "seconds": round(counters["seconds"], 2),
                                     "kind": "val_ema", "q": vq, **{k: round(v, 4) for k, v in r.items()}})
                log_f.flush()  # type: ignore[union-attr]
            bar.update(1)
            bar.set_postfix(loss=f"{loss_v:.3f}", bpp=f"{sum(row[f'bpp_{k + 1}'] for k in range(cfg.levels)):.3f}",
                            psnr=row[f"psnr_{cfg.levels}"], lr=row["lr"])
            if step % 200 == 0 and not args.progress:
                print(f"step {step} {counters['seconds'] / 60:.1f} min loss {loss_v:.4f} lr {lr:.2e} "
                      f"img/s {counters['images'] / max(counters['seconds'], 1e-9):.1f} "
                      f"q in [{q_lo:.2f}, {q_hi:.2f}] skipped {skipped}", flush=True)
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            if log_f is not None:
                log_f.flush()
            save("periodic")
            last_ckpt = time.time()
    stream.close()
    bar.close()
    if log_f is not None:
        log_f.close()
    save("stop" if stop["now"] else "end")
    if args.export and rank == 0:
        from .export import load_rd_checkpoint
        from .io import save_weights
        model_out, info = load_rd_checkpoint(ckpt_path)
        save_weights(model_out, Path(args.export), info)
    if distributed:
        dist.destroy_process_group()
    return ckpt_path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run folder (checkpoint.pt, log.csv)")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--config", default="", help="RDConfig fields as JSON (new runs only)")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8, help="crops per step and process")
    ap.add_argument("--steps", type=int, default=20000, help="planned end of the schedule (a larger value re-warms)")
    ap.add_argument("--stretch", action="store_true",
                    help="while the current segment runs: move its end to --steps (later or earlier) without a new warm-up")
    ap.add_argument("--minutes", type=float, default=0, help="stop after this wall time (0: no limit)")
    ap.add_argument("--stop-at", type=int, default=0, help="stop at this step without changing the schedule")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-min", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--level-weights", default=None,
                    help="w_1,...,w_L: override the config's distortion weight per truncation level")
    ap.add_argument("--q-weight", type=float, default=None,
                    help="weight each crop's loss by 2^(-SLOPE (q - --q-weight-ref)), about 1 / its rate (0: unweighted; "
                         "default: what the checkpoint's run used, else 0)")
    ap.add_argument("--q-weight-ref", type=float, default=4.0, help="the quality whose loss keeps weight 1 under --q-weight")
    ap.add_argument("--grow", default="",
                    help='RDConfig changes as JSON that add identity-initialised blocks to a trained model, e.g. \'{"merge_blocks": [0, 0, 2]}\', '
                         'or "residual-level": a residual last level (x minus the last render, in 4x4 blocks)')
    ap.add_argument("--rate-warmup", default="",
                    help="LEVEL:START:END: level LEVEL's rate enters the loss with a weight rising from 0 at step START to 1 "
                         "at END (a newly grown level; pass it again when resuming)")
    ap.add_argument("--train-only", default="",
                    help="comma-separated parameter name prefixes: train only these (e.g. a newly grown level, "
                         "'levels.3.,levels.2.trans.'), the rest frozen")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--init-from", default="", help="weights to start from without a checkpoint (default: the shipped RD weights)")
    ap.add_argument("--from-scratch", action="store_true", help="without a checkpoint: new weights, not the shipped ones")
    ap.add_argument("--q-range", default="", help="LO,HI: draw q from U(LO, HI) from now on and record it as the model's quality_range "
                         "(default: the model's quality_range)")
    ap.add_argument("--q-widen", type=float, default=0.0,
                    help="with --q-range: move the trained range towards LO,HI by this many q units per 1,000 steps "
                         "instead of at once (a model is not defined outside the qualities it was trained on: its "
                         "renders diverge a quarter of a unit past them); the checkpoint records the range reached")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--prefetch", type=int, default=4)
    ap.add_argument("--val-every", type=int, default=1000, help="EMA validation every N steps (0: never)")
    ap.add_argument("--ckpt-minutes", type=float, default=10.0)
    ap.add_argument("--progress", action="store_true", help="a tqdm bar instead of a line every 200 steps")
    ap.add_argument("--export", default="", help="write the EMA weights (safetensors + JSON) here at the end")
    return ap


def main(argv: list[str] | None = None) -> None:
    train(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
