"""End-to-end acceptance check of the ``ssvcodec`` command on real images, as a user runs it.

    python -m ssvcodec.bench.acceptance ../shared/data/kodak/kodim04.png ../shared/data/kodak/kodim23.png \
        --out bench/results/acceptance

For each image: encode (every level; ``--with-y``; ``--lossless``), ``decode --progressive``,
PSNR per level (must rise), lossless bit-exactness, ``truncate`` == decode of that level, a
corrupted byte (must fail with one line and no output file), a decode in a fresh process with one
torch thread (must give the same PNG bytes as the encoder machine's two-thread decode), and the
wall time of every command against the speed goal of design doc §3.6 (CompressAI
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

from .metrics import bpp, psnr

REFERENCE = {"encode_s": 0.41, "decode_s": 0.52}


def _run(args: list[str], threads: int) -> tuple[int, str, float]:
    """Run one ``ssvcodec`` command in a fresh process with ``threads`` torch threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    extra = ["--threads", str(threads)] if args[0] in ("encode", "decode") else []
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "ssvcodec.codec.cli", *args, *extra], capture_output=True, text=True, env=env)
    return res.returncode, (res.stdout + res.stderr).strip(), time.perf_counter() - t0


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def check_image(src: Path, work: Path, quality: float, weights: list[str]) -> dict:
    ref = np.asarray(Image.open(src).convert("RGB"))
    h, w = ref.shape[:2]
    out: dict = {"image": src.name, "size": f"{w}x{h}", "quality": quality, "modes": {}}
    for mode, flags in (("RS", []), ("CR", ["--with-y"]), ("lossless", ["--lossless"])):
        ssv = work / f"{src.stem}_{mode}.ssv"
        rc, log, t_enc = _run(["encode", str(src), "-o", str(ssv), "--quality", str(quality), *flags, *weights], 2)
        if rc:
            raise RuntimeError(f"encode failed: {log}")
        png = work / f"{src.stem}_{mode}.png"
        rc, log, t_dec = _run(["decode", str(ssv), "-o", str(png), "--progressive", *weights], 2)
        if rc:
            raise RuntimeError(f"decode failed: {log}")
        levels = sorted(work.glob(f"{src.stem}_{mode}_L*.png"), key=lambda p: int(p.stem.rsplit("_L", 1)[1]))
        rows = []
        for p in levels:
            lv = int(p.stem.rsplit("_L", 1)[1])
            part = work / f"{src.stem}_{mode}_t{lv}.ssv"
            _run(["truncate", str(ssv), "--levels", str(lv), "-o", str(part)], 2)
            img = np.asarray(Image.open(p).convert("RGB"))
            rows.append({"level": lv, "bytes": part.stat().st_size, "bpp": round(bpp(part.stat().st_size, h, w), 4),
                         "psnr": round(psnr(ref, img), 3) if not np.array_equal(ref, img) else "inf (exact)",
                         "png_sha": _sha(p)})
            # truncate == decode of that level
            tpng = work / f"{src.stem}_{mode}_t{lv}.png"
            _run(["decode", str(part), "-o", str(tpng), *weights], 2)
            rows[-1]["truncate_equals_level"] = _sha(tpng) == _sha(p)
        psnrs = [r["psnr"] if isinstance(r["psnr"], float) else float("inf") for r in rows]
        # fresh process, one thread, decodes the whole stream to the same PNG bytes
        one = work / f"{src.stem}_{mode}_1thread.png"
        rc1, _, t_dec1 = _run(["decode", str(ssv), "-o", str(one), *weights], 1)
        out["modes"][mode] = {
            "encode_s": round(t_enc, 2), "progressive_decode_s": round(t_dec, 2), "decode_1thread_s": round(t_dec1, 2),
            "file_bytes": ssv.stat().st_size, "levels": rows,
            "psnr_rises_every_level": all(b > a for a, b in zip(psnrs, psnrs[1:])),
            "one_thread_fresh_process_identical": rc1 == 0 and _sha(one) == _sha(png),
        }
    # a corrupted byte: one clear line, non-zero exit, no output file
    bad = work / f"{src.stem}_bad.ssv"
    data = bytearray((work / f"{src.stem}_RS.ssv").read_bytes())
    data[len(data) // 2] ^= 0x40
    bad.write_bytes(bytes(data))
    bad_png = work / f"{src.stem}_bad.png"
    rc, log, _ = _run(["decode", str(bad), "-o", str(bad_png), *weights], 2)
    out["corrupted_byte"] = {"exit_code": rc, "message": log.splitlines()[-1] if log else "",
                             "one_line": len(log.splitlines()) == 1, "no_output_file": not bad_png.exists()}
    return out


def to_markdown(results: list[dict]) -> str:
    lines = ["| image | mode | level | bytes | bpp | PSNR (dB) | truncate == level | encode s | progressive decode s | 1-thread fresh decode identical |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for mode, m in r["modes"].items():
            for i, row in enumerate(m["levels"]):
                first = i == 0
                lines.append(f"| {r['image'] if first else ''} | {mode if first else ''} | {row['level']} | {row['bytes']} | "
                             f"{row['bpp']} | {row['psnr']} | {row['truncate_equals_level']} | "
                             f"{m['encode_s'] if first else ''} | {m['progressive_decode_s'] if first else ''} | "
                             f"{m['one_thread_fresh_process_identical'] if first else ''} |")
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
    ap.add_argument("--quality", type=float, default=4.0)
    ap.add_argument("--weights", default=None)
    a = ap.parse_args(argv)
    weights = ["--weights", a.weights] if a.weights else []
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in a.images:
            print(f"checking {src} ...", flush=True)
            results.append(check_image(Path(src), Path(tmp), a.quality, weights))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    md = to_markdown(results)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
