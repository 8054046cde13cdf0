"""Plot a training log (``OUT/log.csv`` of ``models.train``): training and validation bits/dim
against images seen, and every RE/KL term, so the next run knows where returns diminish.

    python -m ssvcodec.models.report runs/codec/log.csv --out docs/training/codec --title "codec preset"

Several logs (a run and its continuations with ``--init-from``, whose counters carry on) are
joined in the order given, with a dashed line where each continuation starts.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def read_log(path: Path) -> dict[str, np.ndarray]:
    """Columns of a training log as float arrays (empty cells are NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} holds no steps")
    cols: dict[str, np.ndarray] = {}
    for key in rows[0]:
        cols[key] = np.array([float(r[key]) if r.get(key) not in ("", None) else np.nan for r in rows])
    return cols


def join_logs(paths: list[Path]) -> tuple[dict[str, np.ndarray], list[float]]:
    """Columns of several logs one after the other (columns missing from a log are NaN) and the
    images-seen count at which each log after the first starts."""
    logs = [read_log(p) for p in paths]
    keys = list(dict.fromkeys(k for log in logs for k in log))
    joined = {k: np.concatenate([log.get(k, np.full(len(log["step"]), np.nan)) for log in logs]) for k in keys}
    return joined, [float(log["images"][0]) for log in logs[1:]]


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Running mean over ``window`` steps (NaNs ignored)."""
    if window <= 1 or len(y) < window:
        return y
    v = np.where(np.isnan(y), 0.0, y)
    n = (~np.isnan(y)).astype(float)
    k = np.ones(window)
    return np.convolve(v, k, "valid") / np.maximum(np.convolve(n, k, "valid"), 1)


def plot(log: dict[str, np.ndarray], out: Path, title: str, window: int = 50,
         starts: list[float] | None = None, logx: bool = False) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    images = log["images"]
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for size in np.unique(log["size"]):
        sel = log["size"] == size
        ax.plot(smooth(images[sel], window), smooth(log["bpd"][sel], window), label=f"train, {int(size)}px batches (mean of {window})")
    val = ~np.isnan(log["val_bpd"])
    if val.any():
        ax.plot(images[val], log["val_bpd"][val], "o-", label="held-out -ELBO")
    for i, x in enumerate(starts or []):
        ax.axvline(x, color="grey", ls="--", lw=1, label="continued (--init-from)" if i == 0 else None)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("images seen")
    ax.set_ylabel("bits / dim")
    ax.set_title(f"{title}: bits/dim vs images seen")
    ax.grid(alpha=0.3)
    ax.legend()
    p = out.with_name(out.name + "_bpd.png")
    fig.tight_layout()
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    terms = [k for k in log if k.startswith(("re_", "kl_")) and k != "kl_weight"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    main_size = np.unique(log["size"])[-1]
    sel = log["size"] == main_size
    for k in terms:
        ax = axes[0] if k.startswith("re_") else axes[1]
        ax.plot(smooth(images[sel], window), smooth(log[k][sel], window), label=k)
    for ax, name in zip(axes, ("reconstruction terms RE (nats/image)", "KL terms (nats/image)")):
        ax.set_xlabel("images seen")
        ax.set_title(f"{name}, {int(main_size)}px")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_yscale("log")
    p = out.with_name(out.name + "_terms.png")
    fig.tight_layout()
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", nargs="+", help="log.csv files, joined in this order")
    ap.add_argument("--out", required=True, help="path stem of the PNGs")
    ap.add_argument("--title", default="training")
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--logx", action="store_true", help="images seen on a log axis")
    a = ap.parse_args(argv)
    log, starts = join_logs([Path(p) for p in a.log])
    for p in plot(log, Path(a.out), a.title, a.window, starts, a.logx):
        print(f"wrote {p}")
    last = {k: float(v[-1]) for k, v in log.items()}
    val = log["val_bpd"][~np.isnan(log["val_bpd"])]
    print(f"{int(last['step'])} steps, {int(last['images'])} images, {last['seconds'] / 60:.1f} min of steps, "
          f"{last['images'] / last['seconds']:.1f} img/s; last held-out -ELBO {val[-1] if len(val) else float('nan'):.3f} bpd")


if __name__ == "__main__":
    main()
