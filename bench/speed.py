"""Encode / decode speed of ssvcodec beside the classical codecs, per image:
``python -m ssvcodec.bench.speed [IMAGE_DIR] [--limit N] [--repeats 5] [--weights W] [--quality 4]``.

Per image (default: the 24 Kodak images), all in one process on one machine, torch threads = the
number of cores (``--threads``), every time the median of ``--repeats`` runs after one warm-up:

- ssvcodec: ``Codec.encode(image, quality=Q)`` (all latent levels; ``--with-y`` optional), the
  full progressive decode (``decode_progressive``: every level rendered, as ``ssvcodec decode
  --progressive``), with the time at which each level became available, and the decode of the
  top level alone (``Codec.decode``, as ``ssvcodec decode``: entropy decoding of every chunk, one
  render);
- the model's multiply-accumulates from ``models.macs.count_macs`` at that (padded) image size, in
  GMAC per megapixel and kMAC per pixel: one render of any level costs the "decode" figure, a
  progressive decode to level L renders L images (L x that);
- each classical codec (``--codecs``) at a comparable rate: the setting of its sweep whose bpp on
  this image is nearest to the ssvcodec stream's bpp (found by bisection over the sweep, untimed;
  JPEG 2000 is given the target bpp directly), then its encode and decode timed the same way.

Reference (design notes, section 3.6): CompressAI bmshj2018-hyperprior (quality 3) on this 2-core
CPU: 0.41 s encode, 0.52 s decode per 768x512 Kodak image, 43.5 GMAC/MP decode; the ceiling for the
default model is 100 GMAC/MP.  Writes ``OUT.json`` and ``OUT.md`` (default
``bench/results/speed``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import learned, rd
from .codecs import Codec, CodecUnavailable, get_codec
from .metrics import bpp as bpp_of
from .metrics import psnr

DEFAULT_CODECS = ("jpeg", "webp", "jpeg2000", "avif", "jpegxl")
DEFAULT_OUT = rd.REPO_ROOT / "bench" / "results" / "speed"
REFERENCE = {"name": "CompressAI bmshj2018-hyperprior q3 (design notes §3.6)", "enc_s": 0.41, "dec_s": 0.52,
             "gmac_per_mp": 43.5, "image": "768x512 Kodak, this 2-core CPU"}
CEILING_GMAC_PER_MP = 100.0


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """One warm-up, then the median of ``repeats`` timed runs (``repeats <= 0``: one run)."""
    return rd.timed(fn, repeats)


def time_progressive(api: Any, data: bytes, repeats: int) -> dict[str, Any]:
    """Median full progressive decode time and median time at which each level was ready."""
    def once() -> tuple[list[Any], list[float]]:
        t0 = time.perf_counter()
        steps, stamps = [], []
        for s in api.decode_progressive(data):
            stamps.append(time.perf_counter() - t0)
            steps.append(s)
        return steps, stamps

    runs = [once() for _ in range(1 + max(0, repeats))]
    timed_runs = runs[1:] if repeats > 0 else runs
    steps = runs[-1][0]
    per_level = [statistics.median(r[1][i] for r in timed_runs) for i in range(len(steps))]
    return {"steps": steps, "total_s": per_level[-1], "level_ready_s": per_level}


def comparable_setting(codec: Codec, img: np.ndarray, target_bpp: float) -> tuple[Any, bytes]:
    """The setting of ``codec``'s sweep whose bpp on ``img`` is nearest to ``target_bpp``
    (bisection over the sorted sweep, assuming the rate grows with the setting)."""
    h, w = img.shape[:2]
    if codec.quality_label == "bpp":
        q = float(target_bpp)
        return q, codec.encode(img, q)
    qs = sorted(codec.qualities)
    cache: dict[Any, bytes] = {}

    def rate(i: int) -> float:
        if qs[i] not in cache:
            cache[qs[i]] = codec.encode(img, qs[i])
        return bpp_of(len(cache[qs[i]]), h, w)

    lo, hi = 0, len(qs) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if rate(mid) < target_bpp:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda i: abs(rate(i) - target_bpp))
    return qs[best], cache[qs[best]]


def measure_image(name: str, img: np.ndarray, api: Any, codecs: Sequence[Codec], *, quality: float, with_y: bool,
                  repeats: int, macs_cache: dict, count_macs_too: bool = True,
                  version: int | None = None) -> dict[str, Any]:
    h, w = img.shape[:2]
    kw: dict[str, Any] = {"with_y": True} if with_y else {}
    if version is not None:
        kw["version"] = version
    data, enc_s = median_time(lambda: api.encode(img, quality=quality, **kw), repeats)
    prog = time_progressive(api, data, repeats)
    top, dec_top_s = median_time(lambda: api.decode(data), repeats)
    ssv = {
        "bytes": len(data), "bpp": bpp_of(len(data), h, w), "enc_s": enc_s, "dec_progressive_s": prog["total_s"],
        "dec_top_s": dec_top_s, "psnr_top": psnr(img, top),
        "levels": [{"level": s.level, "label": s.label, "bytes_used": s.bytes_used, "bpp": bpp_of(s.bytes_used, h, w),
                    "ready_s": t, "psnr": psnr(img, s.image)} for s, t in zip(prog["steps"], prog["level_ready_s"])],
    }
    row: dict[str, Any] = {"image": name, "height": h, "width": w, "ssvcodec": ssv}
    if count_macs_too:
        from ..models.rd import RDSSVAE

        assert isinstance(api.model, RDSSVAE)
        hp, wp = api._padded(h, w)
        key = (int(hp), int(wp))
        if key not in macs_cache:
            from ..codec.bitstream import FORMAT_VERSION, TABLED_VERSION
            from ..models.macs import count_rd_macs

            macs_cache[key] = count_rd_macs(api.model.eval(), *key,
                                            subpixel_transitions=(version or FORMAT_VERSION) >= TABLED_VERSION)
        row["macs_size"] = list(key)
        row["gmac_per_mp"] = macs_cache[key]
    row["classical"] = {}
    for c in codecs:
        q, enc = comparable_setting(c, img, ssv["bpp"])
        enc, c_enc_s = median_time(lambda c=c, q=q: c.encode(img, q), repeats)
        rec, c_dec_s = median_time(lambda c=c, enc=enc: c.decode(enc), repeats)
        row["classical"][c.name] = {"q": q, "bytes": len(enc), "bpp": bpp_of(len(enc), h, w), "psnr": psnr(img, rec),
                                    "enc_s": c_enc_s, "dec_s": c_dec_s}
    return row


def decode_macs_key(gm: dict[str, float]) -> str | None:
    """The top level's decode figure: the last "decode to level L" of the RD model, else the
    ELBO model's single decode figure."""
    return next((k for k in reversed(list(gm)) if k.startswith("decode")), None)


def macs_rendered(gm: dict[str, float], level: int) -> float | None:
    """GMAC/MP of a progressive decode up to ``level``: the RD model's "progressive decode, levels
    1..L" (level 1: its "decode to level 1"), or L renders of the ELBO model."""
    for key in (f"progressive decode, levels 1..{level}", f"decode to level {level}"):
        if key in gm:
            return gm[key]
    dk = decode_macs_key(gm)
    return gm[dk] * level if dk else None


def summarize(rows: Sequence[dict]) -> dict[str, Any]:
    """Means over images."""
    out: dict[str, Any] = {"n_images": len(rows)}
    s = [r["ssvcodec"] for r in rows]
    out["ssvcodec"] = {k: float(np.mean([x[k] for x in s])) for k in
                       ("bpp", "enc_s", "dec_progressive_s", "dec_top_s", "psnr_top")}
    n_levels = min(len(x["levels"]) for x in s)
    out["ssvcodec"]["levels"] = [{
        "level": s[0]["levels"][i]["level"], "label": s[0]["levels"][i]["label"],
        "bpp": float(np.mean([x["levels"][i]["bpp"] for x in s])),
        "ready_s": float(np.mean([x["levels"][i]["ready_s"] for x in s])),
        "psnr": float(np.mean([x["levels"][i]["psnr"] for x in s]))} for i in range(n_levels)]
    if all("gmac_per_mp" in r for r in rows):
        keys = rows[0]["gmac_per_mp"].keys()
        out["gmac_per_mp"] = {k: float(np.mean([r["gmac_per_mp"][k] for r in rows])) for k in keys}
    names = rows[0]["classical"].keys() if rows else []
    out["classical"] = {n: {k: float(np.mean([r["classical"][n][k] for r in rows]))
                            for k in ("bpp", "psnr", "enc_s", "dec_s")} for n in names}
    return out


def markdown(result: dict) -> str:
    m, s = result["meta"], result["summary"]
    mc = m["machine"]
    lines = [f"# Speed: ssvcodec vs classical codecs ({m['image_dir_name']}, {s['n_images']} images)", "",
             f"{m['date']}; machine: {mc['cpu']}, {mc['cores']} cores, {mc['platform']}; torch threads "
             f"{m['threads']}; every time = mean over images of the median of {m['repeats']} runs after a warm-up. "
             f"ssvcodec: quality {m['quality']}{', --with-y (CR level)' if m['with_y'] else ''}, format version "
             f"{m.get('format_version') or 'default'}, weights "
             f"`{Path(m['weights']).name}`; classical codecs at the setting whose bpp is nearest to ssvcodec's "
             "on each image.", "",
             "| codec | bpp | PSNR | encode s | decode s | decode GMAC/MP |", "|---|---|---|---|---|---|"]
    ss = s["ssvcodec"]
    gm = s.get("gmac_per_mp", {})
    dk = decode_macs_key(gm)
    dec_g = gm.get(dk) if dk else None
    n_lv = len(ss["levels"])
    lines.append(f"| ssvcodec, top level only (`decode`) | {ss['bpp']:.3f} | {ss['psnr_top']:.2f} | {ss['enc_s']:.3f} | "
                 f"{ss['dec_top_s']:.3f} | {rd._f(dec_g)} |")
    lines.append(f"| ssvcodec, progressive (all {n_lv} levels rendered) | {ss['bpp']:.3f} | {ss['psnr_top']:.2f} | "
                 f"{ss['enc_s']:.3f} | {ss['dec_progressive_s']:.3f} | {rd._f(macs_rendered(gm, n_lv))} |")
    for n, c in s["classical"].items():
        lines.append(f"| {n} | {c['bpp']:.3f} | {c['psnr']:.2f} | {c['enc_s']:.3f} | {c['dec_s']:.3f} | – |")
    r = REFERENCE
    lines.append(f"| reference: {r['name']} ({r['image']}) | – | – | {r['enc_s']:.2f} | {r['dec_s']:.2f} | "
                 f"{r['gmac_per_mp']:.1f} |")
    lines += ["", f"Ceiling for the default model: {CEILING_GMAC_PER_MP:.0f} GMAC/MP decode.", "",
              "Progressive decode, per level (mean over images):", "",
              "| level | label | bpp needed | PSNR | ready after s | GMAC/MP rendered so far |", "|---|---|---|---|---|---|"]
    for i, lv in enumerate(ss["levels"]):
        lines.append(f"| {lv['level']} | {lv['label']} | {lv['bpp']:.3f} | {lv['psnr']:.2f} | {lv['ready_s']:.3f} | "
                     f"{rd._f(macs_rendered(gm, i + 1))} |")
    if gm:
        lines += ["", "MACs of the model (models.macs.count_macs) at the image size:", "",
                  "| part | GMAC/MP | MAC/pixel |", "|---|---|---|"]
        for k, v in gm.items():  # 1 GMAC/MP = 1000 MAC/pixel
            part = k.strip().replace("|", "\\|")
            lines.append(f"| {part} | {v:.2f} | {v * 1e3:.0f} |")
    lines += ["", "Per image:", "", "| image | ssvcodec bpp | enc s | dec top s | dec progressive s | "
              + " | ".join(f"{n} enc / dec s" for n in s["classical"]) + " |",
              "|---" * (5 + len(s["classical"])) + "|"]
    for row in result["rows"]:
        x = row["ssvcodec"]
        lines.append(f"| {row['image']} | {x['bpp']:.3f} | {x['enc_s']:.3f} | {x['dec_top_s']:.3f} | "
                     f"{x['dec_progressive_s']:.3f} | "
                     + " | ".join(f"{c['enc_s']:.3f} / {c['dec_s']:.3f}" for c in row["classical"].values()) + " |")
    return "\n".join(lines) + "\n"


def run(image_dir: Path, *, limit: int | None = None, repeats: int = 5, threads: int | None = None,
        quality: float = 4.0, with_y: bool = False, codecs: Sequence[str] = DEFAULT_CODECS,
        macs: bool = True, progress: bool = True, version: int | None = None) -> dict[str, Any]:
    """Time every image; ``version``: the ssvcodec format version to write (default: the newest)."""
    import torch
    from tqdm import tqdm

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    images = rd.load_images(image_dir, limit)
    api = learned.load_codec(None)
    active, unavailable = [], {}
    for n in codecs:
        try:
            active.append(get_codec(n, threads=threads))
        except CodecUnavailable as e:
            unavailable[n] = str(e)
            print(f"skipping unavailable codec {e}", file=sys.stderr)
    macs_cache: dict = {}
    rows = []
    for name, img in tqdm(images, desc="speed", unit="img", disable=not progress, dynamic_ncols=True):
        rows.append(measure_image(name, img, api, active, quality=quality, with_y=with_y, repeats=repeats,
                                  macs_cache=macs_cache, count_macs_too=macs, version=version))
    return {
        "meta": {"date": _dt.datetime.now().isoformat(timespec="seconds"),
                 "image_dir": str(Path(image_dir).resolve()), "image_dir_name": Path(image_dir).resolve().name,
                 "n_images": len(images), "repeats": repeats, "threads": threads, "machine": rd.machine_info(),
                 "versions": rd.library_versions(), "quality": quality, "with_y": with_y, "format_version": version,
                 "weights": str(learned.weights_path()), "plugins": {"bench.learned": learned.describe()},
                 "command": " ".join(["python -m ssvcodec.bench.speed", *sys.argv[1:]])},
        "reference": REFERENCE, "ceiling_gmac_per_mp": CEILING_GMAC_PER_MP, "unavailable": unavailable,
        "summary": summarize(rows), "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("image_dir", nargs="?", type=Path, default=rd.DEFAULT_IMAGE_DIR)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs after a warm-up (0: one run, no warm-up)")
    ap.add_argument("--threads", type=int, default=None, help="torch/codec threads (default: all cores)")
    ap.add_argument("--quality", type=float, default=4.0, help="ssvcodec quality")
    ap.add_argument("--with-y", action="store_true", help="encode the Y chunks too (the last level is then CR)")
    ap.add_argument("--codecs", default=",".join(DEFAULT_CODECS), help="classical codecs to time")
    ap.add_argument("--no-macs", action="store_true", help="skip the MAC count")
    ap.add_argument("--format-version", type=int, default=None,
                    help="ssvcodec format version to write (default: the newest; 5: a quantized Gaussian per latent "
                         "symbol, as before per-scale tables)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output stem: OUT.json, OUT.md")
    ap.add_argument("--no-progress", action="store_true")
    learned.add_arguments(ap)
    args = ap.parse_args(argv)
    learned.configure(args)
    result = run(args.image_dir, limit=args.limit, repeats=args.repeats, threads=args.threads, quality=args.quality,
                 with_y=args.with_y, codecs=[c.strip() for c in args.codecs.split(",") if c.strip()],
                 macs=not args.no_macs, progress=not args.no_progress, version=args.format_version)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    js, md = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    js.write_text(json.dumps(rd._clean(result), indent=1, allow_nan=False) + "\n")
    text = markdown(rd._clean(result))
    md.write_text(text)
    print(text.split("\nPer image")[0])
    print(f"wrote {js}\nwrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
