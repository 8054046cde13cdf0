"""Kodak PSNR of the rate-distortion model against training core-hours:
``python -m ssvcodec.bench.rd_hours WEIGHTS [WEIGHTS ...] [--limit N] [--label TEXT]``.

For each weights file (shipped safetensors + JSON; its meta gives the training seconds, images and
steps), every Kodak image is encoded with real bitstreams at the qualities ``--qualities`` and
decoded at every level from the stream's prefix; per level, PSNR (8-bit RGB, mean over images) is
interpolated at 0.25 / 0.5 / 1.0 bpp (PCHIP in log-rate, as bench.rd; "–" outside the level's
rates). Each evaluation adds (or replaces, by fingerprint) one row of ``OUT.json`` and rewrites
``OUT.md`` and ``OUT.png`` (PSNR vs core-hours, one line per rate for the full stream and for each
coarser level every row has). Core-hours: the
weights' ``core_seconds`` (training seconds x threads x processes, counted by models.train_rd) / 3600.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .bdrate import quality_at_rate
from .metrics import psnr

ROOT = Path(__file__).resolve().parent.parent
KODAK = ROOT.parent / "shared" / "data" / "kodak"
DEFAULT_OUT = ROOT / "bench" / "results" / "rd-hours"
TARGETS = (0.25, 0.5, 1.0)
QUALITIES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)


def evaluate(weights: Path, images: list[np.ndarray], qualities: tuple[float, ...] = QUALITIES,
             progress: bool = True) -> dict[str, Any]:
    """Per level L and quality q: mean bpp (bytes a decoder needs for L) and mean PSNR."""
    from tqdm import tqdm

    from ..codec.bitstream import level_ends, read_stream, truncate_levels
    from ..codec.rd_api import RDCodec

    codec = RDCodec(weights)
    n = codec.n_levels
    bpp = np.zeros((n, len(qualities), len(images)))
    ps = np.zeros_like(bpp)
    for i, img in enumerate(tqdm(images, desc=weights.name, unit="img", disable=not progress)):
        h, w = img.shape[:2]
        for j, q in enumerate(qualities):
            data = codec.encode(img, quality=q)
            ends = level_ends(read_stream(data))
            for L in range(1, n + 1):
                bpp[L - 1, j, i] = 8 * ends[L] / (h * w)
                ps[L - 1, j, i] = psnr(img, codec.decode(truncate_levels(data, L)))
    curves = {f"L{L}": {"q": list(qualities), "bpp": bpp[L - 1].mean(1).tolist(), "psnr": ps[L - 1].mean(1).tolist()}
              for L in range(1, n + 1)}
    at = {name: dict(zip(map(str, TARGETS), quality_at_rate(c["bpp"], c["psnr"], TARGETS))) for name, c in curves.items()}
    return {"curves": curves, "psnr_at_bpp": at}


def from_result(path: Path) -> dict[str, Any]:
    """The same per-level curves from a ``bench.rd`` result of the ``ssvcodec`` entry (its
    ``ssvcodec/L<L>`` curves), instead of coding the images again."""
    from .rd import read_result

    res = read_result(path)
    curves = {}
    for name, c in res["curves"].items():
        if name.startswith("ssvcodec/L"):
            pts = sorted(c["points"], key=lambda p: p["bpp"])
            curves[name.split("/")[1]] = {"q": [p["key"] for p in pts], "bpp": [p["bpp"] for p in pts],
                                          "psnr": [p["psnr"] for p in pts]}
    at = {name: dict(zip(map(str, TARGETS), quality_at_rate(c["bpp"], c["psnr"], TARGETS))) for name, c in curves.items()}
    return {"curves": curves, "psnr_at_bpp": at, "n_images": res["meta"]["n_images"], "from": str(path)}


def row_for(weights: Path, images: list[np.ndarray], label: str, result: Path | None = None) -> dict[str, Any]:
    from ..models.io import read_meta, weights_fingerprint

    meta = read_meta(weights)
    core_s = float(meta.get("core_seconds", float(meta.get("train_seconds", 0.0)) * int(meta.get("world", 1))))
    return {"label": label or weights.name, "weights": weights.name, "fingerprint": weights_fingerprint(weights).hex(),
            "steps": meta.get("steps"), "images_seen": meta.get("images_seen"),
            "core_hours": core_s / 3600, "n_images": len(images),
            **(from_result(result) if result else evaluate(weights, images))}


def fmt(v: float | None) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.2f}"


def all_levels(rows: list[dict[str, Any]]) -> list[str]:
    """Every level key any row has ("L1".."L4"): weights grew from three levels to four in session 23."""
    return sorted({L for r in rows for L in r["psnr_at_bpp"]})


def psnr_at(row: dict[str, Any], level: str, target: float) -> float | None:
    """PSNR of ``level`` at ``target`` bpp in ``row``; None where the row has no such level or rate."""
    return row["psnr_at_bpp"].get(level, {}).get(str(target))


def markdown(rows: list[dict[str, Any]]) -> str:
    levels = all_levels(rows)
    head = "| weights | core-hours | steps | images seen | " + " | ".join(
        f"{L} @{t}" for L in levels for t in TARGETS) + " |"
    lines = ["# Rate-distortion model: Kodak PSNR vs training core-hours", "",
             "`python -m ssvcodec.bench.rd_hours WEIGHTS`: every Kodak image, real bitstreams at q = 0..8 (with "
             "`--from-result R`: the `ssvcodec` curves of a `bench.rd` result, q = -4..9 since session 8), each level decoded "
             "from the stream's prefix; PSNR (dB, mean over images) interpolated at 0.25 / 0.5 / 1.0 bpp (\"–\": the "
             "level's curve does not reach that rate). References at those rates: JPEG 24.9 / 29.1 / 32.7, WebP "
             "28.6 / 31.3 / 35.1 (bench/results/kodak.md). The full stream is L3 to session 20 and L4 (a residual "
             "level) since session 23.", "", head, "|---" * (4 + len(levels) * len(TARGETS)) + "|"]
    for r in rows:
        cells = [fmt(psnr_at(r, L, t)) for L in levels for t in TARGETS]
        lines.append(f"| {r['label']} | {r['core_hours']:.2f} | {r['steps']} | {r['images_seen']} | " + " | ".join(cells) + " |")
    lines += ["", "Full curves (mean bpp, PSNR per quality) are in the JSON."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    hours = [r["core_hours"] for r in rows]
    # one line per rate for the full stream (each row's last level), and one per coarser level
    # that every row has; a level only the newest rows have would be a lone point
    last = [max(r["psnr_at_bpp"]) for r in rows]
    coarse = [L for L in all_levels(rows) if all(L in r["psnr_at_bpp"] and L != m for r, m in zip(rows, last))]
    for name, pick in [("full stream", last)] + [(L, [L] * len(rows)) for L in coarse]:
        for t, style in zip(TARGETS, ("-", "--", ":")):
            ys = [psnr_at(r, L, t) for r, L in zip(rows, pick)]
            ys = [y if y is not None and np.isfinite(y) else np.nan for y in ys]
            if not np.all(np.isnan(ys)):
                ax.plot(hours, ys, style, marker="o", label=f"{name} @ {t} bpp")
    ax.set_xlabel("training core-hours")
    ax.set_ylabel("Kodak PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.rd_hours", description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="+", type=Path)
    ap.add_argument("--label", default="", help="row label (default: the weights file name)")
    ap.add_argument("--limit", type=int, default=None, help="first N Kodak images only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--from-result", type=Path, default=None,
                    help="take the curves of one WEIGHTS from this bench.rd JSON (its ssvcodec rows) instead of coding")
    a = ap.parse_args(argv)
    if a.from_result and len(a.weights) != 1:
        ap.error("--from-result goes with exactly one WEIGHTS (the one that result measured)")
    torch.set_num_threads(a.threads)
    files = sorted(KODAK.glob("kodim*.png"))[: a.limit]
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    js = a.out.with_suffix(".json")
    rows: list[dict[str, Any]] = json.loads(js.read_text())["rows"] if js.exists() else []
    for w in a.weights:
        row = row_for(w, images, a.label, a.from_result)
        rows = [r for r in rows if r["fingerprint"] != row["fingerprint"]] + [row]
    rows.sort(key=lambda r: r["core_hours"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    js.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(markdown(rows))
    plot(rows, a.out.with_suffix(".png"))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
