"""Rate-quality and lossless comparison on CIFAR-10 test images (32x32):
``python -m ssvcodec.bench.cifar [--n 200] [--weights W] [--out bench/results/c10-test]``.

1. A fixed random subset of ``--n`` CIFAR-10 test images (``numpy.random.default_rng(seed)``
   choice without replacement, sorted; the same subset as ``models.evaluate.cifar_subset`` for
   the same seed; all 10,000 in order when n >= 10,000) is written as PNGs to a temporary folder
   and measured by :func:`bench.rd.run` with the ssvcodec plugin (:mod:`bench.learned`) and the
   classical anchors: the same curves, BD-rates and tables as the Kodak run.
2. A lossless table in bits/dim = 8 * bytes / (3 * H * W) (= bpp / 3), whole files (headers
   included, as the protocol counts), mean over images: ssvcodec ``--lossless`` (also its
   payload alone, without the container's header and per-chunk framing) vs PNG, WebP lossless,
   JPEG XL lossless, JPEG 2000 lossless.
3. Beside it the model's negative log-likelihood on the same images from
   ``models.evaluate.evaluate_images``: the single-sample -ELBO in bits/dim and the IWAE-k bound
   with small k (default 8; the thesis' 512 is too slow here).  The NLL is what an ideal
   bits-back coder would approach; ssvcodec codes the quantized latents without bits-back, so
   its lossless rate sits above the -ELBO by roughly the latents' information.

Writes ``OUT.json.gz`` (18,000 rows for 200 images), ``OUT.md`` (+ ``OUT_psnr.png``, ``OUT_msssim.png``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import learned, rd
from .codecs import REGISTRY
from ..models.evaluate import subset_indices

DEFAULT_CODECS = ("ssvcodec", "ssvcodec+y", "ssvcodec-lossless", "jpeg", "webp", "jpeg2000", "avif", "jpegxl",
                  "png", "webp-lossless", "jpegxl-lossless", "jpeg2000-lossless")
DEFAULT_OUT = rd.REPO_ROOT / "bench" / "results" / "c10-test"  # no "cifar" in plot names: they are not dataset images


def bits_per_dim(n_bytes: int, h: int, w: int, channels: int = 3) -> float:
    """``8 * n_bytes / (channels * h * w)``."""
    return 8.0 * n_bytes / (channels * h * w)


def lossless_table(rows: Iterable[dict], image_sizes: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """Mean bits/dim per lossless (curve, key) over images, from bench.rd rows.

    ``image_sizes``: ``{image name: (H, W)}``.  Each entry: ``curve``, ``key``, ``n_images``,
    ``bpd`` (whole file), ``bytes`` (mean), ``exact`` (all bit-exact) and, where the rows carry
    ``payload_bytes`` (ssvcodec), ``payload_bpd``.
    """
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("lossless"):
            groups[(r["curve"], r["key"])].append(r)
    out = []
    for (curve, key), g in groups.items():
        e: dict[str, Any] = {
            "curve": curve, "key": key, "n_images": len(g),
            "bpd": float(np.mean([bits_per_dim(r["n_bytes"], *image_sizes[r["image"]]) for r in g])),
            "bytes": float(np.mean([r["n_bytes"] for r in g])),
            "exact": all(r["exact"] for r in g),
        }
        if all("payload_bytes" in r for r in g):
            e["payload_bpd"] = float(np.mean([bits_per_dim(r["payload_bytes"], *image_sizes[r["image"]]) for r in g]))
        out.append(e)
    out.sort(key=lambda e: e["bpd"])
    return out


def model_nll(images: np.ndarray, k: int, batch: int, seed: int = 0) -> dict[str, float]:
    """-ELBO and IWAE-k bits/dim of the ELBO model on ``images`` (N, 3, H, W) uint8."""
    import torch

    from ..models.evaluate import evaluate_images

    from ..models.io import load_model

    model = load_model(learned.elbo_weights_path()).eval()  # the likelihood model
    with torch.no_grad():
        res = evaluate_images(model, images, k, batch, seed, desc=f"NLL (IWAE-{k})")
    return {"elbo_bpd": res["elbo_bpd"], "iwae_bpd": res["nll_bpd"], "k": k, "n_images": int(res["images"]),
            "terms_nats": {kk: v for kk, v in res.items() if kk.startswith(("re_", "kl_"))}}


def lossless_markdown(table: Sequence[dict], nll: dict[str, Any] | None, n_images: int) -> str:
    lines = ["", f"## Lossless, bits/dim (mean over {n_images} images; 8 x bytes / (3 H W), whole files)", "",
             "| codec | setting | bits/dim | payload only | mean bytes | bit-exact |", "|---|---|---|---|---|---|"]
    for e in table:
        pay = f"{e['payload_bpd']:.3f}" if "payload_bpd" in e else "–"
        lines.append(f"| {e['curve']} | {e['key']} | {e['bpd']:.3f} | {pay} | {e['bytes']:.0f} | "
                     f"{'yes' if e['exact'] else 'NO'} |")
    if nll:
        lines.append(f"| model -ELBO (single sample; not a file) | – | {nll['elbo_bpd']:.3f} | – | – | – |")
        lines.append(f"| model NLL, IWAE-{nll['k']} bound (not a file) | – | {nll['iwae_bpd']:.3f} | – | – | – |")
        lines += ["", "Payload only = the chunks' payloads without ssvcodec's 42-byte header and the 18 bytes of "
                  "framing + CRC per chunk. The NLL rows are the model's likelihood on the same images "
                  "(models.evaluate.evaluate_images), a bound that a bits-back coder could approach; "
                  "ssvcodec codes quantized latents without bits-back."]
    return "\n".join(lines) + "\n"


def run(n: int = 200, *, codecs: Sequence[str] = DEFAULT_CODECS, repeats: int = 1, threads: int | None = None,
        sweeps: dict[str, str] | None = None, k: int = 8, batch: int = 16, seed: int = 1234,
        data_dir: Path | None = None, images: np.ndarray | None = None, progress: bool = True) -> dict:
    """The bench.rd result on the subset, plus ``lossless_bpd``, ``nll`` and ``cifar`` meta.
    ``images`` (N, 3, H, W) uint8 replaces the CIFAR subset (tests)."""
    synthetic = images is not None
    if images is None:
        from ..models.data import DEFAULT_DATA, load_cifar

        test = load_cifar("test", data_dir or DEFAULT_DATA)
        idx = subset_indices(len(test), n, seed)
        images = test[idx]
        names = [f"cifar10_test_{i:05d}.png" for i in idx]
    else:
        idx = np.arange(len(images))
        names = [f"image_{i:05d}.png" for i in idx]
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="ssv_cifar_") as tmp:
        for name, im in zip(names, images):
            Image.fromarray(np.ascontiguousarray(im.transpose(1, 2, 0))).save(Path(tmp) / name)
        result = rd.run(Path(tmp), list(codecs), repeats=repeats, threads=threads, sweeps=sweeps, progress=progress)
    sizes = {nm: tuple(im.shape[1:]) for nm, im in zip(names, images)}
    result["meta"]["image_dir"] = "synthetic (given arrays)" if synthetic else "CIFAR-10 test (models.data.load_cifar)"
    result["meta"]["image_dir_name"] = "synthetic" if synthetic else "CIFAR-10 test"
    result["meta"]["cifar"] = {"n": len(images), "seed": seed, "indices": [int(i) for i in idx]}
    result["lossless_bpd"] = lossless_table(result["rows"], sizes)
    result["nll"] = model_nll(images, k, batch) if k >= 0 and any(c.startswith("ssvcodec") for c in codecs) else None
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ssvcodec.bench.cifar", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="CIFAR-10 test images (fixed random subset)")
    ap.add_argument("--seed", type=int, default=1234, help="subset seed")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output path stem")
    ap.add_argument("--codecs", default=",".join(DEFAULT_CODECS))
    ap.add_argument("--repeats", type=int, default=1,
                    help="timed runs per measurement after a warm-up (0: one run, no warm-up); "
                         "times are secondary here, see bench.speed")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sweep", action="append", default=[], metavar="CODEC=V1,V2,...")
    ap.add_argument("--k", type=int, default=8, help="importance samples of the NLL (0: -ELBO only; -1: skip)")
    ap.add_argument("--batch", type=int, default=16, help="NLL batch size")
    ap.add_argument("--anchor", default="jpeg")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    learned.add_arguments(ap)
    args = ap.parse_args(argv)
    learned.configure(args)
    names = [c.strip() for c in args.codecs.split(",") if c.strip()]
    for c in names:
        if c not in REGISTRY:
            ap.error(f"unknown codec {c!r}; known: {', '.join(REGISTRY)}")
    result = run(args.n, codecs=names, repeats=args.repeats, threads=args.threads,
                 sweeps=rd.parse_sweeps(args.sweep), k=args.k, batch=args.batch, seed=args.seed,
                 data_dir=args.data_dir, progress=not args.no_progress)
    result["meta"]["command"] = " ".join(["python -m ssvcodec.bench.cifar", *(argv if argv is not None else sys.argv[1:])])
    result["meta"]["plugins"] = {"bench.learned": learned.describe()}
    paths = rd.write_outputs(result, args.out, anchor=args.anchor, plots=not args.no_plots, json_gz=True)
    md_path = args.out.with_suffix(".md")
    lmd = lossless_markdown(result["lossless_bpd"], result["nll"], result["meta"]["n_images"])
    md_path.write_text(md_path.read_text() + lmd)
    print(rd.markdown(rd._clean(result), args.anchor).split("\nPoints")[0])
    print(lmd)
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
