"""Rate-quality of the ``ssvcodec`` command itself, swept over target rates, on photos the project
never trained on, with BD-rates against the bench's JPEG, WebP and JPEG XL on the same photos.

    python -m ssvcodec.bench.cli_rd ../shared/data/photos/bsds500/val --limit 8 \\
        --bpp 0.125,0.25,0.5,0.75,1,1.5,2 --out bench/results/never-seen-cli

For each photo and target B, as a user runs it: ``ssvcodec encode --bpp B``, ``decode
--progressive`` (OUT_L1.png ... OUT.png) and ``truncate --levels L`` for every level but the last;
each level's point is (bytes of its truncated stream, PSNR of its OUT_Lk.png). Level k's curve over
the targets is then compared, per photo and on the curves averaged over photos per target (as
:mod:`bench.rd` averages per setting, after CompressAI), with each anchor's quality sweep
(:func:`bench.acceptance.anchor_sweep`). This is issue 11's never-seen check: every level against
JPEG, the full stream against WebP, through the CLI rather than in-process. BD-rates
(:func:`bench.bdrate.bd_rate`) cover only the PSNR range the two curves share.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .acceptance import anchor_sweep, run_cli
from .bdrate import bd_rate
from .metrics import bpp, psnr
from .rd import IMAGE_EXTS, _clean

ANCHORS = ("jpeg", "webp", "jpegxl")


def sweep_image(src: Path, work: Path, targets: Sequence[float], flags: list[str], threads: int) -> dict:
    """The CLI's points on one photo: per target, each level's (bpp, PSNR) and the encode's wall
    time; plus each anchor's sweep on the same photo."""
    ref = np.asarray(Image.open(src).convert("RGB"))
    h, w = ref.shape[:2]
    points = []
    for b in targets:
        ssv = work / f"{src.stem}_{b:g}.ssv"
        rc, log, t_enc = run_cli(["encode", str(src), "-o", str(ssv), "--bpp", f"{b:g}", *flags], threads)
        if rc:
            raise RuntimeError(f"encode {src.name} --bpp {b:g} failed: {log}")
        png = work / f"{src.stem}_{b:g}.png"
        rc, log, t_dec = run_cli(["decode", str(ssv), "-o", str(png), "--progressive", *flags], threads)
        if rc:
            raise RuntimeError(f"decode {ssv.name} failed: {log}")
        outs = sorted(work.glob(f"{src.stem}_{b:g}_L*.png"), key=lambda p: int(p.stem.rsplit("_L", 1)[1]))
        levels = []
        for i, p in enumerate(outs):
            lv = int(p.stem.rsplit("_L", 1)[1])
            size = ssv.stat().st_size
            if i < len(outs) - 1:
                part = work / f"{src.stem}_{b:g}_t{lv}.ssv"
                rc, log, _ = run_cli(["truncate", str(ssv), "--levels", str(lv), "-o", str(part)], threads)
                if rc:
                    raise RuntimeError(f"truncate {ssv.name} --levels {lv} failed: {log}")
                size = part.stat().st_size
            img = np.asarray(Image.open(p).convert("RGB"))
            levels.append({"level": lv, "bytes": size, "bpp": bpp(size, h, w), "psnr": psnr(ref, img)})
        points.append({"target_bpp": b, "file_bpp": bpp(ssv.stat().st_size, h, w), "encode_s": t_enc,
                       "progressive_decode_s": t_dec, "levels": levels})
        for f in work.glob(f"{src.stem}_{b:g}*"):
            f.unlink()
    anchors = {name: anchor_sweep(ref, name) for name in ANCHORS}
    return {"image": src.name, "size": f"{w}x{h}", "points": points, "anchors": anchors}


def level_curve(result: dict, level: int) -> tuple[list[float], list[float]]:
    """One photo's (bpp, PSNR) of ``level`` over the targets."""
    pts = [lv for p in result["points"] for lv in p["levels"] if lv["level"] == level]
    return [p["bpp"] for p in pts], [p["psnr"] for p in pts]


def mean_curves(results: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """Curves averaged over photos: per target (our levels) or per setting (anchors), the mean bpp
    and the mean PSNR."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    n_levels = max(lv["level"] for r in results for p in r["points"] for lv in p["levels"])
    for k in range(1, n_levels + 1):
        per = [level_curve(r, k) for r in results]
        curves[f"L{k}"] = (list(np.mean([c[0] for c in per], 0)), list(np.mean([c[1] for c in per], 0)))
    for name in results[0]["anchors"]:
        arr = np.array([r["anchors"][name] for r in results])  # (photos, settings, 2)
        curves[name] = (list(arr[:, :, 0].mean(0)), list(arr[:, :, 1].mean(0)))
    return curves


def comparisons(results: list[dict]) -> dict:
    """BD-rates of every level against every anchor: on the averaged curves, and per photo."""
    curves = mean_curves(results)
    levels = [k for k in curves if k.startswith("L")]
    out: dict = {"mean_curves": {k: {"bpp": v[0], "psnr": v[1]} for k, v in curves.items()}, "bd_rate_mean": {},
                 "bd_rate_per_image": {}}
    for k in levels:
        out["bd_rate_mean"][k] = {a: bd_rate(*curves[a], *curves[k]) for a in ANCHORS}
        lv = int(k[1:])
        out["bd_rate_per_image"][k] = {
            a: {r["image"]: bd_rate([p[0] for p in r["anchors"][a]], [p[1] for p in r["anchors"][a]], *level_curve(r, lv))
                for r in results} for a in ANCHORS}
    return out


def _pct(v: float) -> str:
    return "–" if v != v else f"{v:+.1f} %"


def to_markdown(results: list[dict], comp: dict, targets: Sequence[float]) -> str:
    levels = list(comp["bd_rate_mean"])
    last = levels[-1]
    lines = [f"# `ssvcodec` through the CLI on {len(results)} photos never trained on",
             "", f"Targets `encode --bpp` {', '.join(f'{t:g}' for t in targets)}; each level's bpp from its "
             "`truncate --levels L` stream, its PSNR from `decode --progressive`'s OUT_Lk.png.", "",
             "BD-rate of each level on the curves averaged over photos (negative: fewer bits than the anchor "
             "at the same PSNR; \"–\": the curves share no PSNR range):", "",
             "| level | " + " | ".join(f"vs {a}" for a in ANCHORS) + " |", "|---|" + "---|" * len(ANCHORS)]
    for k in levels:
        lines.append(f"| {k} | " + " | ".join(_pct(comp["bd_rate_mean"][k][a]) for a in ANCHORS) + " |")
    lines += ["", f"Per photo, the full stream ({last}) and level 1 / 2 against the anchors:", "",
              "| photo | " + " | ".join(f"{last} vs {a}" for a in ANCHORS) + " | "
              + " | ".join(f"{k} vs jpeg" for k in levels[:-1]) + " |",
              "|---|" + "---|" * (len(ANCHORS) + len(levels) - 1)]
    per = comp["bd_rate_per_image"]
    for r in results:
        im = r["image"]
        lines.append(f"| {im} | " + " | ".join(_pct(per[last][a][im]) for a in ANCHORS) + " | "
                     + " | ".join(_pct(per[k]["jpeg"][im]) for k in levels[:-1]) + " |")
    lines += ["", "Points (mean over photos):", "",
              "| target bpp | " + " | ".join(f"{k} bpp / PSNR" for k in levels) + " | encode s | decode s |",
              "|---|" + "---|" * (len(levels) + 2)]
    mc = comp["mean_curves"]
    for i, t in enumerate(targets):
        enc = np.mean([r["points"][i]["encode_s"] for r in results])
        dec = np.mean([r["points"][i]["progressive_decode_s"] for r in results])
        lines.append(f"| {t:g} | " + " | ".join(f"{mc[k]['bpp'][i]:.3f} / {mc[k]['psnr'][i]:.2f}" for k in levels)
                     + f" | {enc:.2f} | {dec:.2f} |")
    lines += ["", "Times are whole `ssvcodec` processes (model loading and the `--bpp` search included)."]
    return "\n".join(lines) + "\n"


def _images(paths: Sequence[str], limit: int | None) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS) if p.is_dir() else [p]
    return out[:limit] if limit else out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+", help="photos, or folders of them (sorted by name)")
    ap.add_argument("--limit", type=int, default=None, help="the first N photos")
    ap.add_argument("--bpp", default="0.125,0.25,0.5,0.75,1,1.5,2", help="target rates of encode --bpp")
    ap.add_argument("--weights", default=None, help="weights of the lossy codec (default: the shipped ones)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each ssvcodec command")
    ap.add_argument("--out", default="bench/results/never-seen-cli", help="path stem of the .json and .md")
    a = ap.parse_args(argv)
    targets = [float(v) for v in a.bpp.split(",")]
    flags = ["--weights", a.weights] if a.weights else []
    images = _images(a.images, a.limit)
    if not images:
        ap.error("no images found")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, src in enumerate(images, 1):
            print(f"[{i}/{len(images)}] {src.name}", flush=True)
            results.append(sweep_image(src, Path(tmp), targets, flags, a.threads))
    comp = comparisons(results)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(_clean({"targets": targets, "photos": results, **comp}), indent=1) + "\n")
    md = to_markdown(results, comp, targets)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
