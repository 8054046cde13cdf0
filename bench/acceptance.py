"""End-to-end acceptance check of the ``ssvcodec`` command on real images, as a user runs it.

    python -m ssvcodec.bench.acceptance ../shared/data/kodak/kodim04.png ../shared/data/kodak/kodim23.png \
        --out bench/results/acceptance [--bpp 0.5] [--lossless] [--with-y]

For each image: ``encode --bpp B`` (the default lossy codec, every level; with ``--lossless`` also
``encode --lossless`` and ``--lossless --max-error 1`` / ``2``, beside WebP lossless and JPEG-LS
with the same bound on the same image; with ``--with-y`` also ``encode --with-y``, whose last level
is the conditional reconstruction given y = x[::2, ::2]),
``decode --progressive`` (OUT_L1.png ... OUT.png),
PSNR per level (must rise) beside JPEG's and WebP's PSNR at the same bpp on the same image (their
quality sweeps interpolated in log-rate), lossless bit-exactness, ``truncate --levels L`` ==
decode of that level, a corrupted byte (must fail with one line and no output file), a decode in
a fresh process with one torch thread (must give the same PNG bytes as the two-thread decode), and
the wall time of every command against the speed goal of design doc §3.6 (CompressAI
bmshj2018-hyperprior: 0.41 s encode, 0.52 s decode per Kodak image on these 2 cores).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .bdrate import quality_at_rate
from .metrics import bpp, psnr

REFERENCE = {"encode_s": 0.41, "decode_s": 0.52}


def run_cli(args: list[str], threads: int) -> tuple[int, str, float]:
    """Run one ``ssvcodec`` command in a fresh process with ``threads`` torch threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    extra = ["--threads", str(threads)] if args[0] in ("encode", "decode") else []
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "ssvcodec.codec.cli", *args, *extra], capture_output=True, text=True, env=env)
    return res.returncode, (res.stdout + res.stderr).strip(), time.perf_counter() - t0


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def anchor_sweep(ref: np.ndarray, name: str) -> list[tuple[float, float]]:
    """(bpp, PSNR) of a bench codec (``jpeg``, ``webp``, ``jpegxl``, ...) at each setting of its
    bench sweep on this image, in the order of its settings."""
    from .codecs import get_codec

    c = get_codec(name)
    return [(bpp(len(d), *ref.shape[:2]), psnr(ref, c.decode(d))) for d in (c.encode(ref, q) for q in c.qualities)]


def anchor_psnr(ref: np.ndarray, name: str, rate: float) -> float:
    """PSNR of a bench codec (:func:`anchor_sweep`) at ``rate`` bpp on this image, interpolated in
    log-rate (nan outside its range)."""
    pts = anchor_sweep(ref, name)
    return float(quality_at_rate([p[0] for p in pts], [p[1] for p in pts], rate))


def lossless_anchors(ref: np.ndarray) -> dict[str, float]:
    """bpp of WebP lossless (the bench's setting) and PNG, and of JPEG-LS at NEAR = 1, 2, on ``ref``."""
    from .codecs import get_codec
    from .lossless_head import jpegls_near

    h, w = ref.shape[:2]
    out = {}
    for name in ("webp-lossless", "png"):
        c = get_codec(name)
        out[name] = bpp(len(c.encode(ref, c.qualities[0])), h, w)
    for n in (1, 2):
        out[f"jpegls-near{n}"] = jpegls_near(ref, n)[0]
    return out


def check_image(src: Path, work: Path, target_bpp: float, weights: list[str], with_y: bool, lossless: bool) -> dict:
    ref = np.asarray(Image.open(src).convert("RGB"))
    h, w = ref.shape[:2]
    out: dict = {"image": src.name, "size": f"{w}x{h}", "target_bpp": target_bpp, "modes": {}}
    modes = [("lossy", ["--bpp", str(target_bpp), *weights])]
    if lossless:
        modes += [("lossless", ["--lossless", *weights]), ("max-error-1", ["--lossless", "--max-error", "1", *weights]),
                  ("max-error-2", ["--lossless", "--max-error", "2", *weights])]
        out["lossless_anchors_bpp"] = {k: round(v, 4) for k, v in lossless_anchors(ref).items()}
    if with_y:
        modes += [("CR", ["--with-y", *weights])]
    for mode, flags in modes:
        ssv = work / f"{src.stem}_{mode}.ssv"
        rc, log, t_enc = run_cli(["encode", str(src), "-o", str(ssv), *flags], 2)
        if rc:
            raise RuntimeError(f"encode failed: {log}")
        png = work / f"{src.stem}_{mode}.png"
        dweights = weights
        rc, log, t_dec = run_cli(["decode", str(ssv), "-o", str(png), "--progressive", *dweights], 2)
        if rc:
            raise RuntimeError(f"decode failed: {log}")
        levels = sorted(work.glob(f"{src.stem}_{mode}_L*.png"), key=lambda p: int(p.stem.rsplit("_L", 1)[1]))
        rows = []
        for p in levels:
            lv = int(p.stem.rsplit("_L", 1)[1])
            part = work / f"{src.stem}_{mode}_t{lv}.ssv"
            run_cli(["truncate", str(ssv), "--levels", str(lv), "-o", str(part)], 2)
            img = np.asarray(Image.open(p).convert("RGB"))
            rate = bpp(part.stat().st_size, h, w)
            rows.append({"level": lv, "bytes": part.stat().st_size, "bpp": round(rate, 4),
                         "psnr": round(psnr(ref, img), 3) if not np.array_equal(ref, img) else "inf (exact)",
                         "max_error": int(np.abs(img.astype(np.int16) - ref).max()),
                         "jpeg_psnr_same_bpp": round(anchor_psnr(ref, "jpeg", rate), 3),
                         "webp_psnr_same_bpp": round(anchor_psnr(ref, "webp", rate), 3), "png_sha": _sha(p)})
            # truncate == decode of that level
            tpng = work / f"{src.stem}_{mode}_t{lv}.png"
            run_cli(["decode", str(part), "-o", str(tpng), *dweights], 2)
            rows[-1]["truncate_equals_level"] = _sha(tpng) == _sha(p)
        psnrs = [r["psnr"] if isinstance(r["psnr"], float) else float("inf") for r in rows]
        # fresh process, one thread, decodes the whole stream to the same PNG bytes
        one = work / f"{src.stem}_{mode}_1thread.png"
        rc1, _, t_dec1 = run_cli(["decode", str(ssv), "-o", str(one), *dweights], 1)
        out["modes"][mode] = {
            "encode_s": round(t_enc, 2), "progressive_decode_s": round(t_dec, 2), "decode_1thread_s": round(t_dec1, 2),
            "file_bytes": ssv.stat().st_size, "file_bpp": round(bpp(ssv.stat().st_size, h, w), 4), "levels": rows,
            "outputs_written": sorted(p.name for p in work.glob(f"{src.stem}_{mode}*.png") if "_t" not in p.stem
                                      and "1thread" not in p.stem),
            "psnr_rises_every_level": all(b > a for a, b in zip(psnrs, psnrs[1:])),
            "one_thread_fresh_process_identical": rc1 == 0 and _sha(one) == _sha(png),
        }
    # a corrupted byte: one clear line, non-zero exit, no output file
    bad = work / f"{src.stem}_bad.ssv"
    data = bytearray((work / f"{src.stem}_lossy.ssv").read_bytes())
    data[len(data) // 2] ^= 0x40
    bad.write_bytes(bytes(data))
    bad_png = work / f"{src.stem}_bad.png"
    rc, log, _ = run_cli(["decode", str(bad), "-o", str(bad_png), *weights], 2)
    out["corrupted_byte"] = {"exit_code": rc, "message": log.splitlines()[-1] if log else "",
                             "one_line": len(log.splitlines()) == 1, "no_output_file": not bad_png.exists()}
    return out


def _anchor(v: float | None) -> str:
    """An anchor's PSNR at our rate, or "–" outside the rates its quality sweep reaches."""
    return "–" if v is None or v != v else f"{v:.2f}"


def to_markdown(results: list[dict]) -> str:
    lines = ["| image | mode | level | bytes | bpp | PSNR (dB) | JPEG / WebP PSNR at that bpp | truncate == level | "
             "encode s | progressive decode s | 1-thread fresh decode identical |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for mode, m in r["modes"].items():
            for i, row in enumerate(m["levels"]):
                first = i == 0
                lines.append(f"| {r['image'] if first else ''} | {mode if first else ''} | {row['level']} | {row['bytes']} | "
                             f"{row['bpp']} | {row['psnr']} | {_anchor(row['jpeg_psnr_same_bpp'])} / {_anchor(row['webp_psnr_same_bpp'])} | "
                             f"{row['truncate_equals_level']} | "
                             f"{m['encode_s'] if first else ''} | {m['progressive_decode_s'] if first else ''} | "
                             f"{m['one_thread_fresh_process_identical'] if first else ''} |")
    lines += ["", "\"–\": below the lowest rate of that codec's quality sweep on this image.", ""]
    anchored = [r for r in results if "lossless_anchors_bpp" in r]
    if anchored:
        lines += ["| image | ssvcodec --lossless bpp (exact) | WebP lossless | PNG | --max-error 1 bpp (largest error) | "
                  "JPEG-LS NEAR=1 | --max-error 2 bpp (largest error) | JPEG-LS NEAR=2 |", "|---|---|---|---|---|---|---|---|"]
        for r in anchored:
            a, m = r["lossless_anchors_bpp"], r["modes"]
            last = {k: m[k]["levels"][-1] for k in ("lossless", "max-error-1", "max-error-2")}
            lines.append(f"| {r['image']} | {m['lossless']['file_bpp']} ({last['lossless']['max_error'] == 0}) | "
                         f"{a['webp-lossless']:.4f} | {a['png']:.4f} | {m['max-error-1']['file_bpp']} "
                         f"({last['max-error-1']['max_error']}) | {a['jpegls-near1']:.4f} | {m['max-error-2']['file_bpp']} "
                         f"({last['max-error-2']['max_error']}) | {a['jpegls-near2']:.4f} |")
        lines.append("")
    for r in results:
        c = r["corrupted_byte"]
        lines.append(f"- {r['image']}: corrupted byte -> exit {c['exit_code']}, one line: {c['one_line']}, "
                     f"no output file: {c['no_output_file']} (`{c['message']}`)")
        for mode, m in r["modes"].items():
            lines.append(f"- {r['image']} {mode}: PSNR rises with every level: {m['psnr_rises_every_level']}")
    lines.append(f"\nTimes are whole `ssvcodec` processes (model loading included), 2 torch threads; reference "
                 f"(design doc §3.6): CompressAI bmshj2018-hyperprior {REFERENCE['encode_s']} s encode, "
                 f"{REFERENCE['decode_s']} s decode per Kodak image on the same 2 cores.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+")
    ap.add_argument("--out", default="bench/results/acceptance")
    ap.add_argument("--bpp", type=float, default=0.5, help="target rate of the lossy stream (encode --bpp)")
    ap.add_argument("--weights", default=None, help="weights of the lossy codec (default: the shipped ones)")
    ap.add_argument("--lossless-weights", default=None, help="the lossless head (default: the shipped one)")
    ap.add_argument("--lossless", action="store_true", help="also --lossless and --max-error 1 / 2")
    ap.add_argument("--with-y", action="store_true", help="also --with-y (the CR level)")
    a = ap.parse_args(argv)
    weights = (["--weights", a.weights] if a.weights else []) + (["--lossless-weights", a.lossless_weights]
                                                                  if a.lossless_weights else [])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in a.images:
            print(f"checking {src} ...", flush=True)
            results.append(check_image(Path(src), Path(tmp), a.bpp, weights, a.with_y, a.lossless))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    md = to_markdown(results)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
