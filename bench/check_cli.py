"""Recompute ssvcodec file sizes of a benchmark JSON with the command-line tool:
``python -m ssvcodec.bench.check_cli bench/results/kodak.json [--images kodim04.png,kodim23.png] [--all]``.

For each selected image and each ssvcodec stream the run measured (``ssvcodec``, ``ssvcodec+y``,
``ssvcodec-lossless``, ... at every quality), it runs ``ssvcodec encode`` in a subprocess with the
options the JSON rows record, then ``ssvcodec truncate --levels L`` for every lower level, and
compares each file's size with the row's ``n_bytes``. The lossless files are also decoded with
``ssvcodec decode`` and compared with the original pixels. Prints one line per file and exits 1 on
any mismatch.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from . import rd


def run_cli(args: list[str]) -> None:
    """One ``ssvcodec`` command in a fresh process of this interpreter (as bench.acceptance runs it)."""
    res = subprocess.run([sys.executable, "-m", "ssvcodec.codec.cli", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ssvcodec {' '.join(args)} failed: {res.stderr.strip()}")


def streams(rows: list[dict], images: set[str] | None) -> dict[tuple, list[dict]]:
    """ssvcodec rows grouped by the file they come from: (image, codec, quality) -> rows."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if "lossless_stream" not in r or (images is not None and r["image"] not in images):
            continue
        out[(r["image"], r["codec"], r["quality"])].append(r)
    return out


def row_weights(row: dict[str, Any], plugin: dict[str, Any], role: str = "weights") -> str | None:
    """The weights a row's stream was made with (``role`` "lossless_weights": the lossless head's,
    for --lossless and --with-y rows)."""
    info = plugin.get(role)
    return info.get("path") if isinstance(info, dict) else info


def weights_options(row: dict[str, Any], plugin: dict[str, Any]) -> list[str]:
    """``--weights`` (and for a lossless row ``--lossless-weights``) of the row's stream."""
    opts: list[str] = []
    weights = row_weights(row, plugin)
    if weights:
        opts += ["--weights", weights]
    head = row_weights(row, plugin, "lossless_weights") if row["lossless_stream"] or row["with_y"] else None
    if head:
        opts += ["--lossless-weights", head]
    return opts


def encode_options(row: dict[str, Any], plugin: dict[str, Any]) -> list[str]:
    opts = ["--quality", f"{row['quality']:g}", "--force"]
    if row["lossless_stream"]:
        opts.append("--lossless")
    elif row["with_y"]:
        opts.append("--with-y")
    return opts + weights_options(row, plugin)


def check(result: dict, images: set[str] | None) -> list[str]:
    """Mismatch messages (empty when every file has the JSON's size)."""
    from PIL import Image

    image_dir = Path(result["meta"]["image_dir"])
    plugin = result["meta"].get("plugins", {}).get("bench.learned", {})
    bad: list[str] = []
    groups = streams(result["rows"], images)
    if not groups:
        return [f"no ssvcodec rows for {sorted(images) if images else 'any image'}"]
    with tempfile.TemporaryDirectory() as tmp:
        for (image, codec, q), rows in sorted(groups.items()):
            src = image_dir / image
            full = Path(tmp) / "s.ssv"
            run_cli(["encode", str(src), "-o", str(full)] + encode_options(rows[0], plugin))
            for r in sorted(rows, key=lambda r: r["level"]):
                path = full
                if r["n_bytes"] != r.get("stream_bytes", r["n_bytes"]):
                    path = Path(tmp) / f"s{r['level']}.ssv"
                    run_cli(["truncate", str(full), "--levels", str(r["level"]), "-o", str(path), "--force"])
                size = path.stat().st_size
                ok = size == r["n_bytes"]
                line = f"{image} {r['curve']} q={q:g}: CLI {size} bytes, JSON {r['n_bytes']}"
                if r["lossless_stream"]:
                    out = Path(tmp) / "out.png"
                    run_cli(["decode", str(path), "-o", str(out), "--force"] + weights_options(r, plugin))
                    with Image.open(src) as a, Image.open(out) as b:
                        same = np.array_equal(np.asarray(a), np.asarray(b))
                    ok &= same
                    line += ", decoded bit-exact" if same else ", decoded NOT bit-exact"
                print(("ok   " if ok else "FAIL ") + line, flush=True)
                if not ok:
                    bad.append(line)
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.check_cli", description=__doc__.split("\n\n")[0])
    ap.add_argument("result", type=Path, help="a bench.rd JSON")
    ap.add_argument("--images", default=None, help="comma-separated image names (default: the first one)")
    ap.add_argument("--all", action="store_true", help="every image of the run")
    a = ap.parse_args(argv)
    result = rd.read_result(a.result)
    names = result["meta"]["images"]
    images = None if a.all else set(a.images.split(",")) if a.images else {names[0]}
    bad = check(result, images)
    print(f"{len(bad)} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
