"""Train an ssVAE by maximising the ELBO (thesis eq. 5.4) with the recipe of §6.2: AdaMax,
lr 2e-3 with per-step exponential decay floored at 1e-4, weight normalisation with data-dependent
initialisation on the first batch, random horizontal flips (and random crop scales for photos).

    python -m ssvcodec.models.train --preset codec --data photos+cifar --out runs/codec --minutes 60
    python -m ssvcodec.models.train --preset cifar-small --data cifar --out runs/cifar --steps 20000

``--kl-warmup-steps N`` weights the KL terms by step/N for the first N steps (the logged bpd is
always the true negative ELBO). Resumable: re-running with the same ``--out`` continues exactly
(model, optimiser, step, torch RNGs; batch s is drawn from its own seed [seed, s]) from
``OUT/checkpoint.pt``, written every ``--ckpt-minutes`` and on exit. ``--init-from`` starts from
shipped safetensors weights with a fresh optimiser (ease it in with ``--lr-warmup-steps``),
continuing the step / images / time counters stored in the weights' metadata, so a finished KL
warm-up is not repeated and the log continues that run's curve. Logs every step to
``OUT/log.csv`` (bpd and every RE/KL term) with a tqdm progress bar. Updates whose loss is not
finite or whose gradient norm exceeds ``--skip-grad-norm`` are skipped and counted.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .config import ModelConfig, get_preset
from .data import (DEFAULT_DATA, ArraySampler, CropSampler, load_cifar, load_photos, photo_files)
from .io import load_model, read_meta, save_weights
from .layers import data_dependent_init
from .ssvae import SSVAE, build_model


def kl_weight(step: int, warmup_steps: int) -> float:
    """KL warm-up (Sonderby et al. 2016, arXiv:1602.02282): the KL terms are weighted by a
    factor rising linearly from 0 to 1 over ``warmup_steps``, so the latents are used before the
    decoders learn to do without them; afterwards the loss is the negative ELBO itself."""
    return 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)


def learning_rate(step: int, lr: float, decay: float, lr_min: float) -> float:
    """Per-step exponential decay floored at ``lr_min`` (thesis §6.2)."""
    return max(lr_min, lr * decay ** step)


class Batches:
    """Training batches from CIFAR-10, photo crops, or both (a CIFAR batch with probability
    ``cifar_fraction``, holding as many pixels as a photo batch)."""

    def __init__(self, kind: str, data_dir: Path, crop: int, batch: int, cifar_fraction: float,
                 cifar_shards: int = 0) -> None:
        self.kind, self.batch, self.crop, self.cifar_fraction = kind, batch, crop, cifar_fraction
        self.cifar = ArraySampler(load_cifar("train", data_dir, cifar_shards or None)) if "cifar" in kind else None
        self.photos = CropSampler(load_photos(photo_files(data_dir, "train")), crop) if "photos" in kind else None
        if self.cifar is None and self.photos is None:
            raise ValueError(f"unknown data {kind!r}: use cifar, photos or photos+cifar")

    def next(self, rng: np.random.Generator) -> np.ndarray:
        use_cifar = self.photos is None or (self.cifar is not None and rng.random() < self.cifar_fraction)
        if use_cifar:
            assert self.cifar is not None
            n = self.batch if self.photos is None else self.batch * (self.crop // 32) ** 2
            return self.cifar.batch(rng, n)
        assert self.photos is not None
        return self.photos.batch(rng, self.batch)


class BatchStream:
    """The batches of a run: batch ``s`` is drawn with its own generator ``default_rng([seed, s])``
    by a background thread up to ``depth`` steps ahead, so data loading overlaps the model's work
    (on a GPU the main thread only queues kernels) and a resumed run draws exactly the batches it
    would have drawn, with no generator state to checkpoint. ``pin``: page-locked for CUDA copies."""

    def __init__(self, batches: Batches, seed: int, depth: int = 4, pin: bool = False) -> None:
        self.batches, self.seed, self.depth, self.pin = batches, seed, max(1, depth), pin
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches")
        self._pending: dict[int, Future[torch.Tensor]] = {}

    def _draw(self, step: int) -> torch.Tensor:
        x = torch.from_numpy(self.batches.next(np.random.default_rng([self.seed, step])))
        return x.pin_memory() if self.pin else x

    def get(self, step: int) -> torch.Tensor:
        """Batch ``step`` (uint8, N x 3 x H x W); queues the next ``depth - 1``."""
        for s in range(step, step + self.depth):
            if s not in self._pending:
                self._pending[s] = self._pool.submit(self._draw, s)
        for s in [s for s in self._pending if s < step]:
            self._pending.pop(s).cancel()
        return self._pending.pop(step).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def validation_set(kind: str, data_dir: Path, crop: int, n: int = 64) -> np.ndarray:
    """A fixed held-out batch: BSDS500 val crops for photo models, CIFAR-10 test images else."""
    if "photos" in kind:
        return CropSampler(load_photos(photo_files(data_dir, "val")), crop, 1.0).batch(np.random.default_rng(1234), n)
    test = load_cifar("test", data_dir)  # shards are ordered by class: take a fixed random subset
    return test[np.random.default_rng(1234).choice(len(test), n * 4, replace=False)]


@torch.no_grad()
def evaluate_bpd(model: SSVAE, images: np.ndarray, device: torch.device, batch: int = 64) -> float:
    """Single-sample negative ELBO in bits/dim over ``images``."""
    model.eval()
    total, dims = 0.0, 0
    g = torch.Generator(device=device).manual_seed(0)
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i:i + batch]).to(device)
        total += float(model(x, generator=g)["nelbo"].sum())
        dims += x[0].numel() * len(x)
    model.train()
    return total / dims / math.log(2)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    ckpt_path = out / "checkpoint.pt"
    data_dir = Path(args.data_dir)
    batches = Batches(args.data, data_dir, args.crop, args.batch, args.cifar_fraction, args.cifar_shards)
    # --val-every 0: no held-out set needed (a device run may carry training shards only)
    val = validation_set(args.data, data_dir, args.crop) if args.val_every else None
    resume = ckpt_path.exists()
    torch.manual_seed(args.seed)  # before building: the initial weights are part of the run
    if resume:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        run_cfg = json.loads(ckpt["run"])
        model = build_model(ModelConfig.from_dict(run_cfg["model_config"]))
        model.load_state_dict(ckpt["model"])
    elif args.init_from:
        model = load_model(Path(args.init_from))
        run_cfg = {"preset": args.preset, "model_config": model.config.to_dict(), "init_from": args.init_from}
        init_meta = read_meta(Path(args.init_from))
    else:
        model = build_model(get_preset(args.preset))
        run_cfg = {"preset": args.preset, "model_config": model.config.to_dict()}
    model.to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.Adamax(model.parameters(), lr=args.lr)
    forward = torch.compile(model) if args.compile else model  # pays off on GPU for long runs
    if resume:
        opt.load_state_dict(ckpt["optimizer"])
        step, images_seen, elapsed = ckpt["step"], ckpt["images_seen"], ckpt["elapsed"]
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state(ckpt["cuda_rng"])
        print(f"resumed {ckpt_path} at step {step} ({images_seen} images, {elapsed / 60:.1f} min)")
    else:
        step, images_seen, elapsed = 0, 0, 0.0
        if args.init_from:
            # Continue the counters of the run that made the weights, so the KL warm-up is not
            # repeated and the log continues that run's curve (the optimizer restarts cold).
            step = int(init_meta.get("steps", 0))
            images_seen = int(init_meta.get("images_seen", 0))
            elapsed = float(init_meta.get("train_seconds", 0.0))
            print(f"continuing from {args.init_from} at step {step} ({images_seen} images)")
        torch.manual_seed(args.seed + step)
        if not args.init_from:
            sampler = batches.photos or batches.cifar
            assert sampler is not None
            init = torch.from_numpy(sampler.batch(np.random.default_rng(args.seed), args.init_batches * args.batch))
            data_dependent_init(model, lambda: model(init.to(device)))
            print(f"data-dependent init on {len(init)} images")

    def save(reason: str) -> None:
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                 "images_seen": images_seen, "elapsed": elapsed,
                 "torch_rng": torch.get_rng_state(), "run": json.dumps(run_cfg)}
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        _atomic_save(state, ckpt_path)
        tqdm.write(f"[{reason}] checkpoint at step {step} -> {ckpt_path}")

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    log_path = out / "log.csv"
    new_log = not log_path.exists()
    log_f = log_path.open("a", newline="")
    writer: csv.DictWriter | None = None
    end_step = args.steps if args.steps else 10 ** 12
    deadline = time.time() + args.minutes * 60 if args.minutes else math.inf
    last_ckpt = time.time()
    start_step = step
    bar = tqdm(total=None if not args.steps else end_step, initial=step, unit="step", dynamic_ncols=True)
    skipped = 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    stream = BatchStream(batches, args.seed, depth=args.prefetch, pin=device.type == "cuda")
    while step < end_step and time.time() < deadline and not stop["now"]:
        t0 = time.time()
        x = stream.get(step).to(device, non_blocking=True)
        lr = learning_rate(step, args.lr, args.lr_decay, args.lr_min)
        if args.lr_warmup_steps:  # eases a cold optimizer into weights that are already trained
            lr *= min(1.0, (step - start_step + 1) / args.lr_warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        with autocast:
            terms = forward(x)
        dims = x[0].numel()
        beta = kl_weight(step, args.kl_warmup_steps)
        kl = sum(v for k, v in terms.items() if k.startswith("kl_"))
        nelbo = terms["nelbo"].float().mean() / dims
        loss = nelbo if beta >= 1.0 else (terms["nelbo"] - (1.0 - beta) * kl).float().mean() / dims
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad_norm))
        ok = math.isfinite(float(loss.detach())) and math.isfinite(grad_norm) and grad_norm < args.skip_grad_norm
        if ok:
            opt.step()
        else:
            skipped += 1
        step += 1
        images_seen += len(x)
        elapsed += time.time() - t0
        row: dict[str, Any] = {"step": step, "images": images_seen, "seconds": round(elapsed, 2), "lr": lr,
                               "size": x.shape[-1], "bpd": float(nelbo.detach()) / math.log(2), "kl_weight": round(beta, 4),
                               "grad_norm": round(grad_norm, 3), "skipped": int(not ok), "val_bpd": ""}
        for k, v in terms.items():
            if k.startswith(("re_", "kl_")):
                row[k] = round(float(v.detach().float().mean()), 2)
        if args.val_every and step % args.val_every == 0:
            row["val_bpd"] = round(evaluate_bpd(model, val, device), 4)
        if writer is None:
            writer = csv.DictWriter(log_f, fieldnames=list(row))
            if new_log:
                writer.writeheader()
        writer.writerow(row)
        bar.update(1)
        bar.set_postfix(bpd=f"{row['bpd']:.3f}", img_s=f"{images_seen / max(elapsed, 1e-9):.1f}",
                        skipped=skipped, val=row["val_bpd"] or "-")
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            log_f.flush()
            save("periodic")
            last_ckpt = time.time()
    stream.close()
    bar.close()
    log_f.close()
    save("stop" if stop["now"] else "end")
    if args.export:
        meta = {"steps": step, "images_seen": images_seen, "train_seconds": round(elapsed, 1),
                "data": args.data, "crop": args.crop, "batch": args.batch, "device": str(device),
                "val_bpd_elbo": evaluate_bpd(model, val, device) if val is not None else None}
        save_weights(model, Path(args.export), meta)
        print(f"exported {args.export}: {meta}")
    return ckpt_path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="codec")
    ap.add_argument("--data", default="photos+cifar", help="cifar, photos or photos+cifar")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--out", required=True, help="run folder (checkpoint.pt, log.csv)")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cifar-fraction", type=float, default=0.25)
    ap.add_argument("--cifar-shards", type=int, default=0, help="CIFAR-10 train shards to load (0: all 50)")
    ap.add_argument("--steps", type=int, default=0, help="stop at this step (0: no limit)")
    ap.add_argument("--minutes", type=float, default=0, help="stop after this wall time (0: no limit)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lr-decay", type=float, default=0.999999)
    ap.add_argument("--lr-min", type=float, default=1e-4)
    ap.add_argument("--clip-grad-norm", type=float, default=100.0)
    ap.add_argument("--skip-grad-norm", type=float, default=1e4)
    ap.add_argument("--kl-warmup-steps", type=int, default=0, help="KL weight rises 0 -> 1 over these steps")
    ap.add_argument("--init-batches", type=int, default=4)
    ap.add_argument("--init-from", default="", help="start from shipped .safetensors weights")
    ap.add_argument("--lr-warmup-steps", type=int, default=0,
                    help="learning rate rises over this many steps of this process (use with --init-from)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--prefetch", type=int, default=4, help="batches drawn ahead by a background thread")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (GPU runs)")
    ap.add_argument("--val-every", type=int, default=500, help="held-out -ELBO every N steps (0: never)")
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--export", default="", help="write safetensors weights here at the end")
    return ap


def main(argv: list[str] | None = None) -> None:
    train(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
