"""Large images through the CLI: ``python -m ssvcodec.bench.large [--mp 12 | --side 4096] [--lossless]
[--out bench/results/large]``.

Builds a photo mosaic of about ``--mp`` megapixels (or ``--side`` x ``--side``) from the Kodak
images (portrait ones turned),
then times ``ssvcodec encode`` and ``ssvcodec decode`` on it and on one Kodak image, each as its
own process, with the peak resident memory of that process (``wait4``'s ru_maxrss). The fixed
start-up cost (interpreter, torch, weights: ``ssvcodec`` on a 64x64 image) is measured the same
way and taken off both before comparing time per pixel. ``--lossless``: the streams are
``encode --lossless``, and each decode is checked to equal its input bit for bit. Writes
``OUT.json`` and ``OUT.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
KODAK = ROOT.parent / "shared" / "data" / "kodak"


def mosaic(mp: float, kodak: Path = KODAK) -> np.ndarray:
    """Kodak images (768x512, portrait ones turned) tiled to about ``mp`` megapixels."""
    tiles = []
    for f in sorted(kodak.glob("kodim*.png")):
        a = np.asarray(Image.open(f).convert("RGB"))
        tiles.append(a if a.shape[0] == 512 else np.rot90(a))
    cols = max(1, round((mp * 1e6 * 768 / 512) ** 0.5 / 768))
    rows = max(1, round(mp * 1e6 / (cols * 768 * 512)))
    grid = [[tiles[(r * cols + c) % len(tiles)] for c in range(cols)] for r in range(rows)]
    return np.concatenate([np.concatenate(row, axis=1) for row in grid], axis=0)


def run_measured(args: list[str]) -> dict[str, float]:
    """Wall time and peak RSS (MiB) of one ``python -m ssvcodec.codec.cli ARGS`` process."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "ssvcodec.codec.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode() if p.stderr else ""
    if status != 0:
        raise RuntimeError(f"ssvcodec {' '.join(args)} failed: {err.strip()}")
    return {"s": wall, "peak_mib": usage.ru_maxrss / 1024}


def measure(img: np.ndarray, tmp: Path, name: str, extra: list[str]) -> dict[str, object]:
    src, ssv, out = tmp / f"{name}.png", tmp / f"{name}.ssv", tmp / f"{name}_out.png"
    Image.fromarray(img).save(src)
    enc = run_measured(["encode", str(src), "-o", str(ssv), "--force", "-q", *extra])
    dec = run_measured(["decode", str(ssv), "-o", str(out), "--force", "-q"])
    h, w = img.shape[:2]
    row: dict[str, object] = {"image": name, "height": h, "width": w, "mp": h * w / 1e6, "bytes": ssv.stat().st_size,
                              "bpp": 8 * ssv.stat().st_size / (h * w), "encode": enc, "decode": dec}
    if "--lossless" in extra:
        row["bit_exact"] = bool(np.array_equal(np.asarray(Image.open(out)), img))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.large", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mp", type=float, default=12.0)
    ap.add_argument("--side", type=int, default=0, help="a side x side mosaic instead of --mp")
    ap.add_argument("--quality", default="4")
    ap.add_argument("--lossless", action="store_true", help="lossless streams, each decode checked bit for bit")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "large")
    a = ap.parse_args(argv)
    extra = ["--quality", a.quality] + (["--lossless"] if a.lossless else [])
    big_img = mosaic(1.3 * a.side ** 2 / 1e6)[:a.side, :a.side] if a.side else mosaic(a.mp)
    big_name = f"mosaic-{a.side}x{a.side}" if a.side else f"mosaic-{a.mp:g}MP"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = [measure(np.full((64, 64, 3), 128, np.uint8), tmp, "startup-64x64", extra),
                measure(np.asarray(Image.open(KODAK / "kodim23.png").convert("RGB")), tmp, "kodim23", extra),
                measure(np.ascontiguousarray(big_img), tmp, big_name, extra)]
    base, kodak, big = rows
    per_px = {}
    for op in ("encode", "decode"):
        s0 = base[op]["s"]  # type: ignore[index]
        k = (kodak[op]["s"] - s0) / kodak["mp"]  # type: ignore[index,operator]
        b = (big[op]["s"] - s0) / big["mp"]  # type: ignore[index,operator]
        per_px[op] = {"kodak_s_per_mp": k, "large_s_per_mp": b, "ratio": b / k}
    res = {"rows": rows, "per_mp_without_startup": per_px, "command": " ".join(["python -m ssvcodec.bench.large", *sys.argv[1:]])}
    lines = ["# Large images through the CLI", "",
             f"`{res['command']}`; each command its own process; peak = its maximum resident memory; "
             "per-MP times with the start-up process's time taken off.", "",
             "| image | MP | bpp | encode s | encode peak MiB | decode s | decode peak MiB |"
             + (" bit-exact |" if a.lossless else ""), "|---|---|---|---|---|---|---|" + ("---|" if a.lossless else "")]
    for r in rows:
        lines.append(f"| {r['image']} | {r['mp']:.2f} | {r['bpp']:.3f} | {r['encode']['s']:.2f} | "  # type: ignore[index]
                     f"{r['encode']['peak_mib']:.0f} | {r['decode']['s']:.2f} | {r['decode']['peak_mib']:.0f} |"  # type: ignore[index]
                     + (f" {'yes' if r['bit_exact'] else 'NO'} |" if a.lossless else ""))
    lines += ["", "| | Kodak s/MP | large s/MP | ratio |", "|---|---|---|---|"]
    for op, v in per_px.items():
        lines.append(f"| {op} | {v['kodak_s_per_mp']:.2f} | {v['large_s_per_mp']:.2f} | {v['ratio']:.2f} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
