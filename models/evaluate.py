"""Likelihood evaluation: IWAE-k negative log-likelihood per image (Burda et al. 2016,
arXiv:1509.00519; thesis §6.3) and a table shaped like thesis Table 7.2.

    python -m ssvcodec.models.evaluate weights/ssvae-codec.safetensors [--k 512] [--n 10000] [--kodak]

``log p(x) ~ logsumexp_i [log p(x, w_i) - log q(w_i | x)] - log k`` is taken per image (the
reference code applied it to batch-averaged ELBOs, which is not an IWAE bound), then averaged.
bits/dim = NLL / (3 H W ln 2).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .data import DEFAULT_DATA, load_cifar, load_image
from .io import load_model
from .ssvae import SSVAE


@torch.no_grad()
def iwae_nll(model: SSVAE, x: torch.Tensor, k: int, chunk: int = 64,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """IWAE-k estimate of -log p(x) in nats for each image of ``x`` (B, 3, H, W), (B,).
    Samples are drawn ``chunk`` at a time (as a batch of chunk * B) to bound memory."""
    b = x.shape[0]
    weights = []
    done = 0
    while done < k:
        n = min(chunk, k - done)
        xr = x.repeat(n, 1, 1, 1)
        weights.append(model(xr, generator=generator)["log_weight"].view(n, b).double())
        done += n
    lw = torch.cat(weights, dim=0)
    return -(torch.logsumexp(lw, dim=0) - math.log(k))


@torch.no_grad()
def elbo_terms(model: SSVAE, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Single-sample ELBO terms (nats per image) for a batch."""
    return {k: v.double() for k, v in model(x, generator=generator).items()}


def bits_per_dim(nats: float, h: int, w: int) -> float:
    return nats / (3 * h * w * math.log(2))


@torch.no_grad()
def evaluate_images(model: SSVAE, images: np.ndarray | list[np.ndarray], k: int, batch: int,
                    seed: int = 0, desc: str = "IWAE") -> dict[str, float]:
    """Mean IWAE-k NLL (bpd) and mean ELBO terms (nats) over images (arrays (3, H, W) uint8)."""
    g = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = {}
    nll_bpd, elbo_bpd, count = 0.0, 0.0, 0
    for i in tqdm(range(0, len(images), batch), desc=desc, unit="batch", leave=False):
        x = torch.from_numpy(np.stack(images[i:i + batch]))
        h, w = x.shape[-2:]
        terms = elbo_terms(model, x, g)
        for key, v in terms.items():
            if key.startswith(("re_", "kl_")):
                sums[key] = sums.get(key, 0.0) + float(v.sum())
        elbo_bpd += float(terms["bpd"].sum())
        nll = iwae_nll(model, x, k, chunk=max(1, min(k, 2048 // max(1, len(x)))), generator=g) if k > 0 else terms["nelbo"]
        nll_bpd += sum(bits_per_dim(float(v), h, w) for v in nll)
        count += len(x)
    out = {key: v / count for key, v in sums.items()}
    out["nll_bpd"] = nll_bpd / count
    out["elbo_bpd"] = elbo_bpd / count
    out["images"] = count
    return out


def table_72_row(name: str, res: dict[str, float], levels: int) -> str:
    """One row in the layout of thesis Table 7.2 (NLL bpd; RE_x, RE_y, KL_z, KL_u in nats).
    For a VAE (levels = 0) the thesis calls its only latent z: its KL goes to KL_z."""
    re_y = sum(v for k, v in res.items() if k.startswith("re_y"))
    kl_z = sum(v for k, v in res.items() if k.startswith("kl_z"))
    kl_u = res.get("kl_u", 0.0)
    if levels == 0:
        kl_z, kl_u, re_y_s, kl_u_s = kl_u, 0.0, "-", "-"
    else:
        re_y_s, kl_u_s = f"{re_y:.0f}", f"{kl_u:.0f}"
    return f"| {name} | {res['nll_bpd']:.3f} | {res['elbo_bpd']:.3f} | {res['re_x']:.0f} | {re_y_s} | {kl_z:.0f} | {kl_u_s} |"


TABLE_HEADER = ("| model | NLL (bpd, IWAE) | -ELBO (bpd) | RE_x | RE_y | KL_z | KL_u |\n"
                "|---|---|---|---|---|---|---|\n"
                "| thesis VAE + RealNVP (Table 7.2) | 3.51 | - | 5540 | - | 1966 | - |\n"
                "| thesis ssVAE (Table 7.2) | 3.65 | - | 5107 | 1241 | 619 | 819 |")


def subset_indices(total: int, n: int, seed: int = 1234) -> np.ndarray:
    """Indices of the fixed evaluation subset: all when n >= total, else ``n`` drawn without
    replacement by numpy's generator with ``seed``, sorted (the CIFAR-10 shards are sorted by
    class, so a prefix would be one class)."""
    if n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, n, replace=False))


def cifar_subset(n: int, data_dir: Path = DEFAULT_DATA, seed: int = 1234) -> np.ndarray:
    """``n`` CIFAR-10 test images of the fixed subset (:func:`subset_indices`)."""
    test = load_cifar("test", data_dir)
    return test[subset_indices(len(test), n, seed)]


#: the fixed subset every model card reports, and the shipped-weights test recomputes
CARD_CHECK = {"data": "CIFAR-10 test, fixed random subset (numpy seed 1234)", "n": 16, "k": 8, "seed": 0}


def card_check(model: SSVAE, data_dir: Path = DEFAULT_DATA) -> float:
    """IWAE-8 NLL (bpd) of 16 fixed CIFAR-10 test images with seeded sampling: a cheap number a
    model card states and a test reproduces."""
    res = evaluate_images(model, cifar_subset(CARD_CHECK["n"], data_dir), CARD_CHECK["k"], CARD_CHECK["n"],
                          CARD_CHECK["seed"], "card check")
    return res["nll_bpd"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help=".safetensors file (with its .json beside it)")
    ap.add_argument("--k", type=int, default=512, help="importance samples (0: ELBO only)")
    ap.add_argument("--n", type=int, default=10000, help="CIFAR-10 test images (fixed random subset if < 10000; 0: none)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--kodak", action="store_true", help="also bits/dim of the 24 Kodak images at full resolution")
    ap.add_argument("--kodak-k", type=int, default=16)
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--card-check", action="store_true", help="print the model card's fixed-subset check")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(Path(a.weights))
    data_dir = Path(a.data_dir)
    name = Path(a.weights).stem
    if a.card_check:
        print(f"card check ({CARD_CHECK}): {card_check(model, data_dir):.4f} bpd")
    t0 = time.time()
    if a.n > 0:
        res = evaluate_images(model, cifar_subset(a.n, data_dir), a.k, a.batch, a.seed, "CIFAR-10 test")
        how = f"IWAE-{a.k}" if a.k > 0 else "NLL column = single-sample -ELBO (k=0)"
        print(f"CIFAR-10 test, {res['images']:.0f} images, {how} ({time.time() - t0:.0f} s, "
              f"{torch.get_num_threads()} threads)")
        print(TABLE_HEADER)
        print(table_72_row(f"{name} (this)", res, model.levels))
    if a.kodak:
        t1 = time.time()
        files = sorted((data_dir / "kodak").glob("kodim*.png"))
        per = []
        for f in tqdm(files, desc="Kodak", unit="img"):
            r = evaluate_images(model, [load_image(f)], a.kodak_k, 1, a.seed, f.stem)
            per.append(r)
        nll = float(np.mean([r["nll_bpd"] for r in per]))
        elbo = float(np.mean([r["elbo_bpd"] for r in per]))
        how = f"IWAE-{a.kodak_k} {nll:.3f} bpd, " if a.kodak_k > 0 else ""
        print(f"Kodak, {len(files)} images at full resolution: {how}-ELBO {elbo:.3f} bpd ({time.time() - t1:.0f} s)")


if __name__ == "__main__":
    main()
