"""Rate-quality benchmark: ``python -m ssvcodec.bench.rd [IMAGE_DIR] [options]``.

For every image, codec and quality setting it measures (protocol §4 of
``ssvae-codec.md``):

- bpp from the byte count of the whole file (or of the prefix a progressive
  decoder needs, see :meth:`bench.codecs.Codec.operating_points`),
- PSNR and MS-SSIM on 8-bit RGB,
- encode and decode wall time: median of ``--repeats`` runs after one warm-up.

and writes to ``--out`` (a path stem, e.g. ``bench/results/kodak``):

- ``STEM.json``: meta (machine, versions, settings), per-image rows,
  per-curve averaged points, BD-rate / BD-PSNR of every test curve against
  every other lossy curve, PSNR at 0.25/0.5/0.75/1.0 bpp;
- ``STEM.md``: the tables;
- ``STEM_psnr.png``, ``STEM_msssim.png``: RD plots, one line per curve.

Averaging over images: per (curve, point key) the mean of bpp, PSNR, MS-SSIM
and times over images, plus the PSNR of the mean MSE.  BD-rates and PSNR at
fixed rates are computed on these averaged curves (as CompressAI does).

A learned codec plugs in as one more registered :class:`~bench.codecs.Codec`
(several curves through ``operating_points``); ``--plugin MODULE`` imports the
module that registers it, e.g. ``--plugin bench.learned --codecs ssvcodec,jpeg``.
Plugin hooks (all optional):

- module functions ``add_arguments(parser)`` (more command-line options),
  ``configure(args)`` (called with the parsed options) and ``describe()``
  (a JSON-able dict stored in ``meta["plugins"][MODULE]``);
- an operating point may carry an ``extra`` dict: its items are added to
  that point's rows (e.g. the options to reproduce the file);
- a codec class may define a static method ``derived_curves(curves)``
  returning more curves computed from the averaged ones (e.g. an envelope);
  it is called once per distinct function after :func:`aggregate`.

``--repeats 0`` runs each measurement once without a warm-up (quick runs);
``--repeats-for CODEC=N`` overrides it for one codec (e.g. a slow learned codec).

Long runs are resumable: every finished (image, codec, quality) appends its rows
to ``STEM.rows.jsonl``; ``--resume`` reads that file and measures only what is
missing (same images, codecs and sweeps), so an interrupted run loses at most
one setting.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import codecs as codecs_mod
from .bdrate import bd_psnr, bd_rate, quality_at_rate
from .metrics import bpp, ms_ssim, ms_ssim_db, mse, psnr_from_mse

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE_DIR = REPO_ROOT / ".." / "shared" / "data" / "kodak"
DEFAULT_CODECS = (
    "jpeg", "webp", "jpeg2000", "jpeg2000-layers", "avif", "jpegxl",
    "webp-lossless", "jpegxl-lossless", "jpeg2000-lossless", "png",
)
TARGET_BPPS = (0.25, 0.5, 0.75, 1.0)
#: PSNR (dB) at TARGET_BPPS on Kodak from CompressAI's published JSON results (design notes §4):
#: reference numbers, not measured by this benchmark.
PUBLISHED_KODAK = {
    "bmshj2018-hyperprior": (29.95, 33.06, 35.28, 37.14),
    "JPEG": (24.66, 28.95, 31.06, 32.59),
    "WebP": (28.55, 31.32, 33.45, 35.11),
    "AV1": (30.52, 33.66, 35.87, 37.59),
    "VTM": (31.27, 34.37, 36.58, 38.24),
}
IMAGE_EXTS = (".png", ".ppm", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")  # a JPEG's decoded pixels are the reference


# --------------------------------------------------------------------------
# measuring
def load_images(image_dir: Path, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """All images in ``image_dir`` (sorted by name) as uint8 HxWx3 RGB."""
    from PIL import Image

    files = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no images in {image_dir}")
    out = []
    for p in files:
        with Image.open(p) as im:
            out.append((p.name, np.asarray(im.convert("RGB"))))
    return out


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """Run ``fn`` once (warm-up) and ``repeats`` more times; return the last
    result and the median wall time of the timed runs in seconds.
    ``repeats <= 0``: a single timed run without warm-up."""
    if repeats <= 0:
        t0 = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - t0
    result = fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times)


def measure(codec: codecs_mod.Codec, image_name: str, img: np.ndarray, q: Any, repeats: int) -> list[dict]:
    """Rows (one per operating point) for one codec setting on one image."""
    h, w = img.shape[:2]
    data, enc_s = timed(lambda: codec.encode(img, q), repeats)
    rows = []
    for pt in codec.operating_points(data, q):
        rec, dec_s = timed(pt.decode, repeats)
        if rec.shape != img.shape or rec.dtype != np.uint8:
            raise ValueError(f"{pt.curve} {pt.key}: decoded {rec.dtype} {rec.shape}, expected uint8 {img.shape}")
        m = mse(img, rec)
        s = ms_ssim(img, rec)
        row = {
            "image": image_name, "codec": codec.name, "curve": pt.curve, "key": pt.key,
            "q": q if not isinstance(q, tuple) else list(q),
            "lossless": bool(codec.lossless), "n_bytes": int(pt.n_bytes),
            "bpp": bpp(pt.n_bytes, h, w), "mse": m, "psnr": psnr_from_mse(m),
            "ms_ssim": s, "exact": m == 0.0, "enc_s": enc_s, "dec_s": dec_s,
        }
        extra = getattr(pt, "extra", None)
        if extra:
            row.update({k: v for k, v in extra.items() if k not in row})
        rows.append(row)
    return rows


# --------------------------------------------------------------------------
# aggregation
def aggregate(rows: Iterable[dict]) -> dict[str, dict]:
    """Average rows per (curve, key) over images.

    Returns ``{curve: {"codec", "lossless", "points": [...]}}`` with points
    sorted by mean bpp; each point has mean ``bpp``, ``psnr``, ``ms_ssim``,
    ``ms_ssim_db``, ``enc_s``, ``dec_s``, ``psnr_mean_mse`` (PSNR of the mean
    MSE), ``exact`` (all images bit-exact) and ``n_images``.
    """
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    order: list[tuple[str, str]] = []
    for r in rows:
        k = (r["curve"], r["key"])
        if k not in groups:
            order.append(k)
        groups[k].append(r)
    curves: dict[str, dict] = {}
    for curve, key in order:
        g = groups[(curve, key)]
        ms = float(np.mean([r["ms_ssim"] for r in g]))
        pt = {
            "key": key,
            "n_images": len(g),
            "bpp": float(np.mean([r["bpp"] for r in g])),
            "psnr": float(np.mean([r["psnr"] for r in g])),
            "psnr_mean_mse": psnr_from_mse(float(np.mean([r["mse"] for r in g]))),
            "ms_ssim": ms,
            "ms_ssim_db": ms_ssim_db(ms),
            "exact": all(r["exact"] for r in g),
            "enc_s": float(np.mean([r["enc_s"] for r in g])),
            "dec_s": float(np.mean([r["dec_s"] for r in g])),
        }
        c = curves.setdefault(curve, {"codec": g[0]["codec"], "lossless": g[0]["lossless"], "points": []})
        c["points"].append(pt)
    n_max = {c: max(p["n_images"] for p in v["points"]) for c, v in curves.items()}
    for name, c in curves.items():
        c["points"].sort(key=lambda p: p["bpp"])
        c["complete"] = all(p["n_images"] == n_max[name] for p in c["points"])
    return curves


def _lossy(curves: dict[str, dict]) -> list[str]:
    return [n for n, c in curves.items() if not c["lossless"] and len(c["points"]) >= 2]


def _xy(curve: dict, metric: str = "psnr") -> tuple[list[float], list[float]]:
    return [p["bpp"] for p in curve["points"]], [p[metric] for p in curve["points"]]


def bd_tables(curves: dict[str, dict], tests: Sequence[str] | None = None) -> dict[str, dict]:
    """BD-rate (%) and BD-PSNR (dB) of each test curve vs every other lossy curve.

    ``tests`` defaults to all lossy curves (full matrix).  Returned as
    ``{"bd_rate": {test: {anchor: value}}, "bd_psnr": {...}}``.
    """
    lossy = _lossy(curves)
    tests = [t for t in (tests or lossy) if t in lossy]
    out: dict[str, dict] = {"bd_rate": {}, "bd_psnr": {}}
    for t in tests:
        tr, tp = _xy(curves[t])
        out["bd_rate"][t] = {}
        out["bd_psnr"][t] = {}
        for a in lossy:
            if a == t:
                continue
            ar, ap = _xy(curves[a])
            out["bd_rate"][t][a] = bd_rate(ar, ap, tr, tp)
            out["bd_psnr"][t][a] = bd_psnr(ar, ap, tr, tp)
    return out


def psnr_at_bpp(curves: dict[str, dict], targets: Sequence[float] = TARGET_BPPS) -> dict[str, dict[str, float]]:
    out = {}
    for n in _lossy(curves):
        r, p = _xy(curves[n])
        out[n] = {f"{t:g}": v for t, v in zip(targets, quality_at_rate(r, p, targets))}
    return out


# --------------------------------------------------------------------------
# reporting
def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def library_versions() -> dict[str, str | None]:
    v: dict[str, str | None] = {}
    try:
        import PIL
        from PIL import features

        v["pillow"] = PIL.__version__
        for f in ("jpg", "webp", "jpg_2000", "avif", "zlib"):
            try:
                v[f"pillow:{f}"] = features.version(f)
            except ValueError:
                v[f"pillow:{f}"] = None
    except ImportError:
        pass
    try:
        import imagecodecs

        v["imagecodecs"] = imagecodecs.__version__
        v["libjxl"] = imagecodecs.jpegxl_version() if hasattr(imagecodecs, "jpegxl_version") else None
    except ImportError:
        pass
    try:
        import torch

        v["torch"] = torch.__version__
        v["torch_threads"] = str(torch.get_num_threads())
    except ImportError:
        pass
    return v


def _clean(x: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``None``, tuples lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _timing_text(repeats: int) -> str:
    return f"the median of {repeats} runs after a warm-up" if repeats > 0 else "one run (no warm-up)"


def _json_scalar(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _reused_lines(meta: dict) -> list[str]:
    """The header lines naming the rows taken from an earlier run (``--reuse``) and its machine."""
    by_origin: dict[tuple[str, str], list[str]] = defaultdict(list)
    for c, o in meta.get("reused", {}).items():
        by_origin[(o["date"], o["cpu"])].append(c)
    return ["", *(f"Rows of {', '.join(sorted(cs))} taken from the run of {d} ({cpu}) with --reuse: "
                  "their times are that machine's." for (d, cpu), cs in sorted(by_origin.items()))] if by_origin else []


def markdown(result: dict, anchor: str = "jpeg") -> str:
    curves, meta = result["curves"], result["meta"]
    lossy = _lossy(curves)
    bdr, bdp = result["bd_rate"], result["bd_psnr"]
    at = result["psnr_at_bpp"]
    lines = [
        f"# Rate-quality benchmark: {meta['image_dir_name']} ({meta['n_images']} images)",
        "",
        f"{meta['date']}; {meta['machine']['cpu']}, {meta['machine']['cores']} cores; "
        f"threads {meta['threads']}; times = mean over images of {_timing_text(meta['repeats'])}"
        + "".join(f"; {c}: {_timing_text(n)}" for c, n in meta.get("repeats_for", {}).items()) + ".",
        *_reused_lines(meta),
        "",
        f"| curve | points | bpp range | PSNR@0.25 | @0.5 | @0.75 | @1.0 | BD-rate vs {anchor} | BD-PSNR vs {anchor} | enc ms | dec ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in lossy:
        pts = curves[n]["points"]
        r = bdr.get(n, {}).get(anchor) if n != anchor else 0.0
        p = bdp.get(n, {}).get(anchor) if n != anchor else 0.0
        enc = float(np.mean([q["enc_s"] for q in pts])) * 1e3
        dec = float(np.mean([q["dec_s"] for q in pts])) * 1e3
        qa = at.get(n, {})
        lines.append(
            f"| {n} | {len(pts)} | {pts[0]['bpp']:.3f}–{pts[-1]['bpp']:.3f} | "
            + " | ".join(_f(qa.get(f"{t:g}")) for t in TARGET_BPPS)
            + f" | {_f(r, '{:+.1f} %')} | {_f(p, '{:+.2f}')} | {enc:.1f} | {dec:.1f} |"
        )
    if meta["image_dir_name"].lower() == "kodak":
        lines += ["", "Published reference on Kodak (CompressAI's JSON results, design notes §4; not measured "
                  "in this run), PSNR at the same rates:", "",
                  "| reference | PSNR@0.25 | @0.5 | @0.75 | @1.0 |", "|---|---|---|---|---|"]
        for n, vals in PUBLISHED_KODAK.items():
            lines.append(f"| {n} (published) | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    lossless = [n for n, c in curves.items() if c["lossless"]]
    if lossless:
        lines += ["", "Lossless:", "", "| codec | bpp | bit-exact | enc ms | dec ms |", "|---|---|---|---|---|"]
        for n in lossless:
            pt = curves[n]["points"][0]
            lines.append(f"| {n} | {pt['bpp']:.3f} | {'yes' if pt['exact'] else 'NO'} | {pt['enc_s']*1e3:.1f} | {pt['dec_s']*1e3:.1f} |")
    if bdr:
        anchors = lossy
        lines += ["", "BD-rate (%) of row (test) vs column (anchor), PCHIP over the overlapping PSNR range:", "",
                  "| test \\ anchor | " + " | ".join(anchors) + " |", "|---" * (len(anchors) + 1) + "|"]
        for t, row in bdr.items():
            lines.append(f"| {t} | " + " | ".join("·" if a == t else _f(row.get(a), "{:+.1f}") for a in anchors) + " |")
    lines += ["", "Points (mean over images):", "",
              "| curve | key | bpp | PSNR | PSNR(mean MSE) | MS-SSIM | MS-SSIM dB | enc ms | dec ms |",
              "|---|---|---|---|---|---|---|---|---|"]
    for n, c in curves.items():
        for pt in c["points"]:
            lines.append(
                f"| {n} | {pt['key']} | {pt['bpp']:.4f} | {_f(pt['psnr'])} | {_f(pt['psnr_mean_mse'])} | "
                f"{pt['ms_ssim']:.5f} | {_f(pt['ms_ssim_db'])} | {pt['enc_s']*1e3:.1f} | {pt['dec_s']*1e3:.1f} |"
            )
    if result.get("unavailable"):
        lines += ["", "Unavailable: " + "; ".join(f"{k} ({v})" for k, v in result["unavailable"].items())]
    if result.get("errors"):
        lines += ["", f"Errors: {len(result['errors'])} (see JSON)"]
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, dict], stem: Path, title: str, max_bpp: float = 2.0,
         published: dict[str, tuple[float, ...]] | None = None) -> list[Path]:
    """PSNR-bpp and MS-SSIM(dB)-bpp plots, one line per lossy curve. The bpp axis reaches past
    ``max_bpp`` when a curve starts beyond it, so that every curve shows; ``published`` adds
    reference PSNRs at TARGET_BPPS (grey, dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    lowest = [_xy(curves[n], "psnr")[0] for n in _lossy(curves)]
    max_bpp = min(8.0, max([max_bpp] + [1.1 * min(x) for x in lowest if len(x)]))
    for metric, label, suffix in (
        ("psnr", "PSNR [dB] (RGB)", "psnr"),
        ("ms_ssim_db", "MS-SSIM [dB] = −10 log10(1 − MS-SSIM)", "msssim"),
    ):
        fig, ax = plt.subplots(figsize=(10, 5.5))
        ys = []
        for i, n in enumerate(_lossy(curves)):
            x, y = _xy(curves[n], metric)
            style: dict[str, Any] = {"color": plt.get_cmap("tab20")(i % 20), "marker": ".",
                                     "linestyle": "--" if curves[n]["codec"] != n else "-"}
            if curves[n].get("derived"):  # an envelope: a broad grey band under the curves it joins
                style.update(color="black", alpha=0.3, linestyle="-", linewidth=5, marker=None, zorder=1)
            ax.plot(x, y, label=n, **style)
            ys += [v for u, v in zip(x, y) if u <= max_bpp and math.isfinite(v)]
        if metric == "psnr":
            for i, (n, vals) in enumerate((published or {}).items()):
                ax.plot(TARGET_BPPS, vals, ":", color=str(0.35 + 0.1 * i), marker="x", label=f"{n} (published)")
                ys += list(vals)
        ax.set_xlim(0, max_bpp)
        if ys:
            ax.set_ylim(min(ys) - 0.5, max(ys) + 0.5)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        p = stem.with_name(f"{stem.name}_{suffix}.png")
        fig.savefig(p, dpi=120)
        plt.close(fig)
        paths.append(p)
    return paths


# --------------------------------------------------------------------------
# driver
def parse_sweeps(specs: Sequence[str], option: str = "--sweep", form: str = "CODEC=V1,V2,...") -> dict[str, str]:
    """``["jpeg=10,50,90", ...]`` -> ``{"jpeg": "10,50,90"}`` (also ``--repeats-for CODEC=N``)."""
    out = {}
    for s in specs:
        name, _, values = s.partition("=")
        if not values:
            raise ValueError(f"bad {option} {s!r}; expected {form}")
        out[name.strip()] = values
    return out


def parse_values(text: str, progressive: bool = False) -> tuple[Any, ...]:
    """``"10,50,90"`` -> ``(10, 50, 90)``; a progressive codec gets one tuple."""
    vals = tuple(int(v) if v.strip().lstrip("-").isdigit() else float(v) for v in text.split(","))
    return (vals,) if progressive else vals


def _setting_id(image_name: str, codec_name: str, q: Any) -> str:
    return json.dumps([image_name, codec_name, list(q) if isinstance(q, tuple) else q])


def read_row_log(path: Path) -> dict[str, list[dict]]:
    """``{setting id: rows}`` from a ``STEM.rows.jsonl`` written by :func:`run` (a torn last line,
    from a killed run, is ignored)."""
    done: dict[str, list[dict]] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[rec["setting"]] = rec["rows"]
    return done


def rows_from_result(path: Path, skip_codecs: Iterable[str] = ()) -> dict[str, list[dict]]:
    """``{setting id: rows}`` from the rows of an earlier result JSON (``--reuse``), leaving out
    ``skip_codecs`` (the ones to measure again)."""
    data = read_result(path)
    skip = set(skip_codecs)
    done: dict[str, list[dict]] = defaultdict(list)
    for r in data["rows"]:
        if r["codec"] not in skip:
            if r.get("psnr") is None and r.get("mse") == 0:  # the JSON's strict null for a lossless PSNR
                r = {**r, "psnr": float("inf")}
            q = tuple(r["q"]) if isinstance(r["q"], list) else r["q"]
            done[_setting_id(r["image"], r["codec"], q)].append(r)
    return dict(done)


def reused_provenance(path: Path, codecs: Iterable[str]) -> dict[str, dict[str, str]]:
    """``{codec: {"date", "cpu"}}``: where the rows that ``--reuse`` takes from ``path`` were
    measured, followed back through that result's own reuse, so that the report does not give
    their times this run's machine."""
    data = read_result(path)
    meta, held = data["meta"], {r["codec"] for r in data["rows"]}
    earlier = meta.get("reused", {})
    own = {"date": meta["date"], "cpu": f"{meta['machine']['cpu']}, {meta['machine']['cores']} cores"}
    return {c: earlier.get(c, own) for c in codecs if c in held}


def run(
    image_dir: Path,
    codec_names: Sequence[str],
    *,
    limit: int | None = None,
    repeats: int = 5,
    repeats_for: dict[str, int] | None = None,
    threads: int | None = None,
    sweeps: dict[str, str] | None = None,
    tests: Sequence[str] | None = None,
    progress: bool = True,
    row_log: Path | None = None,
    resume: bool = False,
    reuse: dict[str, list[dict]] | None = None,
) -> dict:
    """Measure every codec on every image; return the result dict (unsanitised).

    ``row_log``: append each finished setting's rows there (JSON lines); with ``resume``,
    settings already in it are read back instead of measured again."""
    from tqdm import tqdm

    threads = threads or os.cpu_count() or 1
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
    images = load_images(image_dir, limit)
    sweeps = sweeps or {}
    unavailable: dict[str, str] = {}
    active: list[tuple[codecs_mod.Codec, tuple]] = []
    for name in codec_names:
        try:
            c = codecs_mod.get_codec(name, threads=threads)
        except codecs_mod.CodecUnavailable as e:
            unavailable[name] = str(e).split(": ", 1)[-1]
            print(f"skipping unavailable codec {e}", file=sys.stderr)
            continue
        qs = parse_values(sweeps[name], c.progressive) if name in sweeps else tuple(c.qualities)
        active.append((c, qs))
    unknown = set(sweeps) - set(codec_names)
    if unknown:
        raise KeyError(f"--sweep for codecs not selected: {sorted(unknown)}")

    repeats_for = repeats_for or {}
    unknown = set(repeats_for) - set(codec_names)
    if unknown:
        raise KeyError(f"--repeats-for codecs not selected: {sorted(unknown)}")
    done = dict(reuse or {})
    done.update(read_row_log(row_log) if (row_log is not None and resume) else {})
    if row_log is not None and not resume:
        row_log.parent.mkdir(parents=True, exist_ok=True)
        row_log.write_text("")
    rows: list[dict] = []
    errors: list[dict] = []
    total = len(images) * sum(len(qs) for _, qs in active)
    n_resumed = 0
    with tqdm(total=total, disable=not progress, unit="enc", dynamic_ncols=True) as bar:
        for image_name, img in images:
            for c, qs in active:
                for q in qs:
                    bar.set_description(f"{image_name} {c.name}")
                    sid = _setting_id(image_name, c.name, q)
                    if sid in done:
                        rows += done[sid]
                        n_resumed += 1
                        bar.update(1)
                        continue
                    try:
                        new = measure(c, image_name, img, q, repeats_for.get(c.name, repeats))
                    except Exception as e:  # one failing setting must not end the run
                        errors.append({"image": image_name, "codec": c.name, "q": str(q), "error": repr(e)})
                        print(f"error: {c.name} q={q} on {image_name}: {e!r}", file=sys.stderr)
                    else:
                        rows += new
                        if row_log is not None:
                            with row_log.open("a") as f:
                                # plain json keeps inf/NaN (a lossless PSNR) so resumed rows equal measured ones
                                f.write(json.dumps({"setting": sid, "rows": new}, default=_json_scalar) + "\n")
                    bar.update(1)
    if n_resumed:
        print(f"took {n_resumed} of {total} settings from earlier rows (--resume / --reuse)", file=sys.stderr)

    curves = aggregate(rows)
    hooks: list[Callable[[dict], dict]] = []
    for c, _ in active:
        h = getattr(type(c), "derived_curves", None)
        if h is not None and h not in hooks:
            hooks.append(h)
    for h in hooks:
        curves.update(h(curves))
    bd = bd_tables(curves, tests)
    return {
        "meta": {
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "image_dir": str(Path(image_dir).resolve()),
            "image_dir_name": Path(image_dir).resolve().name,
            "n_images": len(images),
            "images": [n for n, _ in images],
            "repeats": repeats,
            "repeats_for": dict(repeats_for),
            "threads": threads,
            "machine": machine_info(),
            "versions": library_versions(),
            "sweeps": {c.name: [list(q) if isinstance(q, tuple) else q for q in qs] for c, qs in active},
            "command": " ".join(sys.argv),
        },
        "unavailable": unavailable,
        "errors": errors,
        "curves": curves,
        "bd_rate": bd["bd_rate"],
        "bd_psnr": bd["bd_psnr"],
        "psnr_at_bpp": psnr_at_bpp(curves),
        "rows": rows,
    }


def write_outputs(result: dict, stem: Path, anchor: str = "jpeg", plots: bool = True,
                  json_gz: bool = False) -> list[Path]:
    """Write ``STEM.json`` (or, with ``json_gz``, ``STEM.json.gz``: many small images make the
    per-image rows megabytes, and the whole tree travels to the device machine), ``STEM.md``
    and the plots."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    clean = _clean(result)
    text = json.dumps(clean, indent=1, allow_nan=False) + "\n"
    if json_gz:
        js = stem.with_name(stem.name + ".json.gz")
        js.write_bytes(gzip.compress(text.encode(), mtime=0))  # mtime=0: same result, same bytes
    else:
        js = stem.with_suffix(".json")
        js.write_text(text)
    md = stem.with_suffix(".md")
    md.write_text(markdown(clean, anchor))
    paths = [js, md]
    if plots:
        kodak = result["meta"]["image_dir_name"].lower() == "kodak"
        paths += plot(result["curves"], stem, f"{result['meta']['image_dir_name']} ({result['meta']['n_images']} images)",
                      published=PUBLISHED_KODAK if kodak else None)
    return paths


def import_plugin(name: str):  # type: ignore[no-untyped-def]
    """A plugin module by its name; this project's own may be named without the package prefix
    (``bench.learned`` is ``ssvcodec.bench.learned``)."""
    if name.split(".")[0] in ("bench", "codec", "models"):
        name = f"ssvcodec.{name}"
    return importlib.import_module(name)


def read_result(path: Path) -> dict:
    """A result written by :func:`write_outputs`, plain or gzipped."""
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if path.name.endswith(".gz") else data)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.rd", description=__doc__.split("\n\n")[0])
    ap.add_argument("image_dir", nargs="?", type=Path, default=DEFAULT_IMAGE_DIR)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "kodak",
                    help="output path stem: writes STEM.json, STEM.md, STEM_psnr.png, STEM_msssim.png")
    ap.add_argument("--codecs", default=",".join(DEFAULT_CODECS),
                    help="comma-separated registry names, or 'all' (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement after a warm-up (0: one run, no warm-up)")
    ap.add_argument("--repeats-for", action="append", default=[], metavar="CODEC=N",
                    help="timed runs for one codec (overrides --repeats), e.g. ssvcodec=0")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the settings already measured in STEM.rows.jsonl (same images, codecs, sweeps)")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="reuse the rows of an earlier result JSON for the settings it holds (same machine, same images), "
                         "except for the codecs of --remeasure")
    ap.add_argument("--remeasure", default="", help="codecs whose rows --reuse must not take (comma-separated)")
    ap.add_argument("--threads", type=int, default=None, help="torch/codec threads (default: all cores)")
    ap.add_argument("--sweep", action="append", default=[], metavar="CODEC=V1,V2,...",
                    help="override a codec's quality sweep (for a progressive codec: its layer rates)")
    ap.add_argument("--test", default=None,
                    help="comma-separated test curves for the BD tables (default: every lossy curve)")
    ap.add_argument("--anchor", default="jpeg", help="anchor column of the markdown summary")
    ap.add_argument("--plugin", action="append", default=[], help="module to import that registers more codecs")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--list", action="store_true", help="list registered codecs and exit")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    plugins = {m: import_plugin(m) for m in pre.parse_known_args(argv)[0].plugin}
    for m in plugins.values():
        if hasattr(m, "add_arguments"):
            m.add_arguments(ap)
    args = ap.parse_args(argv)
    for m in plugins.values():
        if hasattr(m, "configure"):
            m.configure(args)
    if args.list:
        for n, reason in codecs_mod.available_codecs().items():
            print(f"{n:20s} {'available' if reason is None else 'UNAVAILABLE: ' + reason}")
        return 0
    names = codecs_mod.codec_names() if args.codecs == "all" else [c.strip() for c in args.codecs.split(",") if c.strip()]
    for n in names:
        if n not in codecs_mod.REGISTRY:
            ap.error(f"unknown codec {n!r}; known: {', '.join(codecs_mod.codec_names())}")
    repeats_for = {k: int(v) for k, v in parse_sweeps(args.repeats_for, "--repeats-for", "CODEC=N").items()}
    result = run(
        args.image_dir, names, limit=args.limit, repeats=args.repeats, repeats_for=repeats_for,
        threads=args.threads, sweeps=parse_sweeps(args.sweep),
        tests=args.test.split(",") if args.test else None, progress=not args.no_progress,
        row_log=Path(str(args.out) + ".rows.jsonl"), resume=args.resume,
        reuse=rows_from_result(args.reuse, [c for c in args.remeasure.split(",") if c]) if args.reuse else None,
    )
    result["meta"]["plugins"] = {n: m.describe() for n, m in plugins.items() if hasattr(m, "describe")}
    if args.reuse:
        remeasured = {c for c in args.remeasure.split(",") if c}
        result["meta"]["reused"] = reused_provenance(args.reuse, [n for n in names if n not in remeasured])
    paths = write_outputs(result, args.out, anchor=args.anchor, plots=not args.no_plots)
    print(markdown(_clean(result), args.anchor).split("\nPoints")[0])
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
