"""Two ``models.train_rd`` runs that share their crops and qualities, compared batch by batch:
``python -m ssvcodec.bench.paired_log CONTROL/log.csv PROBE/log.csv [--from STEP] [--window 500]``.

Runs forked from one checkpoint with the same seed draw the same crops and the same q at every
step (``train_rd``: batch s has the seed [seed, s, rank]), so the difference of their logged
training terms at one step is the difference of the two models on the same images, free of the
variance between batches. Printed per window of steps: the probe's mean relative change of each
level's bits per pixel (the stream up to that level) and its mean PSNR change per level, with the
standard error (training-mode quantization: noise for the rate, rounding for the renders), then
both runs' held-out EMA rows (``val_ema``, fixed q) at the steps both logged.

A batch mixes qualities (the log keeps only their mean), and its bpp is a mean over crops, led by
the high-q ones, while its PSNR is that of the mean MSE, led by the low-q ones; so a change that
moves rates against each other shows here as a change of both, and only the ``val_ema`` rows (or
``bench.probe``) say at which q. This is the paired check of docs/training.md (sessions 16, 17).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def read_log(path: Path) -> tuple[dict[int, dict[str, str]], dict[tuple[int, str], dict[str, str]]]:
    """(training rows by step, validation rows by (step, q)) of a train_rd log.csv."""
    train: dict[int, dict[str, str]] = {}
    val: dict[tuple[int, str], dict[str, str]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["kind"] == "train":
                train[int(row["step"])] = row
            elif row["kind"] == "val_ema":
                val[(int(row["step"]), row["q"])] = row
    return train, val


def levels_of(row: dict[str, str]) -> int:
    return sum(1 for k in row if k.startswith("bpp_"))


def paired_rows(a: dict[int, dict[str, str]], b: dict[int, dict[str, str]], start: int) -> list[int]:
    """The steps both runs logged from ``start`` on; SystemExit if their qualities differ there
    (then the runs do not share their batches)."""
    steps = sorted(s for s in set(a) & set(b) if s >= start)
    for s in steps:
        if a[s]["q"] != b[s]["q"]:
            raise SystemExit(f"step {s}: q {a[s]['q']} vs {b[s]['q']}: these runs do not share their batches")
    return steps


def summarise(a: dict[int, dict[str, str]], b: dict[int, dict[str, str]], steps: list[int],
              window: int) -> list[dict[str, object]]:
    """Per window of ``window`` shared steps: the probe-vs-control relative bpp change (%) and
    PSNR change (dB, with its standard error) per level, the stream's bpp cumulated over levels."""
    out = []
    n_levels = levels_of(a[steps[0]]) if steps else 0
    for i in range(0, len(steps), window):
        sel = steps[i:i + window]
        row: dict[str, object] = {"steps": f"{sel[0]}..{sel[-1]}", "n": len(sel)}
        for k in range(1, n_levels + 1):
            bpp_a = np.array([sum(float(a[s][f"bpp_{j}"]) for j in range(1, k + 1)) for s in sel])
            bpp_b = np.array([sum(float(b[s][f"bpp_{j}"]) for j in range(1, k + 1)) for s in sel])
            d = np.array([float(b[s][f"psnr_{k}"]) - float(a[s][f"psnr_{k}"]) for s in sel])
            row[f"bpp_{k}"] = 100.0 * float(np.mean(bpp_b / bpp_a - 1.0))
            row[f"psnr_{k}"] = float(np.mean(d))
            row[f"psnr_{k}_se"] = float(np.std(d) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.paired_log", description=__doc__.split("\n\n")[0])
    ap.add_argument("control", type=Path)
    ap.add_argument("probe", type=Path)
    ap.add_argument("--from", dest="start", type=int, default=0, help="first step to compare")
    ap.add_argument("--window", type=int, default=500, help="shared steps per printed row")
    args = ap.parse_args(argv)
    a, va = read_log(args.control)
    b, vb = read_log(args.probe)
    steps = paired_rows(a, b, args.start)
    if not steps:
        raise SystemExit("no shared training steps")
    print(f"{len(steps)} shared steps, {steps[0]}..{steps[-1]}; probe {args.probe} against control {args.control}")
    rows = summarise(a, b, steps, args.window)
    n_levels = levels_of(a[steps[0]])
    print("| steps | n | " + " | ".join(f"L{k} bpp | L{k} dB" for k in range(1, n_levels + 1)) + " |")
    print("|---|---|" + "---|---|" * n_levels)
    for r in rows:
        cells = " | ".join(f"{r[f'bpp_{k}']:+.2f} % | {r[f'psnr_{k}']:+.3f} ± {r[f'psnr_{k}_se']:.3f}"
                           for k in range(1, n_levels + 1))
        print(f"| {r['steps']} | {r['n']} | {cells} |")
    shared = sorted(set(va) & set(vb))
    for step, q in shared:
        if step < args.start:
            continue
        ra, rb = va[(step, q)], vb[(step, q)]
        last = n_levels
        stream = [sum(float(r[f"bpp_{j}"]) for j in range(1, last + 1)) for r in (ra, rb)]
        print(f"val step {step} q {q}: stream bpp @ level-{last} PSNR: control {stream[0]:.4f} @ "
              f"{float(ra[f'psnr_{last}']):.3f} dB, probe {stream[1]:.4f} @ {float(rb[f'psnr_{last}']):.3f} dB")


if __name__ == "__main__":
    main(sys.argv[1:])
