"""Export a training checkpoint as shippable weights (safetensors + JSON; no optimiser state).

    python -m ssvcodec.models.export runs/rd/checkpoint.pt weights/ssvae-rd.safetensors      # EMA weights
    python -m ssvcodec.models.export runs/codec/checkpoint.pt weights/ssvae-codec.safetensors
    python -m ssvcodec.models.export runs/lossless/checkpoint.pt weights/ssvae-lossless.safetensors

A rate-distortion checkpoint (``models.train_rd``) or a lossless head's (``models.train_lossless``)
exports its EMA weights (``--raw``: the optimised ones); an ELBO checkpoint (``models.train``) its
model.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .config import LosslessConfig, ModelConfig, RDConfig
from .io import save_weights
from .lossless import LosslessHead
from .rd import RDSSVAE
from .ssvae import SSVAE, build_model


def load_checkpoint_model(path: Path) -> tuple[SSVAE, dict]:
    """The model of a training checkpoint and its training counters."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    run = json.loads(ckpt["run"])
    model = build_model(ModelConfig.from_dict(run["model_config"]))
    model.load_state_dict(ckpt["model"])
    info = {"steps": ckpt["step"], "images_seen": ckpt["images_seen"], "train_seconds": round(ckpt["elapsed"], 1),
            "preset": run.get("preset"), "init_from": run.get("init_from", "")}
    return model.eval(), info


def load_rd_checkpoint(path: Path, ema: bool = True) -> tuple[RDSSVAE, dict]:
    """The (EMA) model of a ``models.train_rd`` checkpoint and what the model card states."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = RDSSVAE(RDConfig.from_dict(json.loads(ckpt["config"])))
    model.load_state_dict(ckpt["ema" if ema else "model"])
    c = json.loads(ckpt["counters"])
    run = json.loads(ckpt.get("run", "{}"))
    info = {"steps": c["step"], "images_seen": c["images"], "train_seconds": round(c["seconds"], 1),
            "core_seconds": round(c.get("core_seconds", c["seconds"]), 1),
            "weights": "EMA" if ema else "optimised", **run}
    return model.eval(), info


def load_lossless_checkpoint(path: Path, ema: bool = True) -> tuple[LosslessHead, dict]:
    """The (EMA) head of a ``models.train_lossless`` checkpoint and what its model card states."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    head = LosslessHead(LosslessConfig.from_dict(json.loads(ckpt["config"])))
    head.load_state_dict(ckpt["ema" if ema else "model"])
    c = json.loads(ckpt["counters"])
    info = {"steps": c["step"], "images_seen": c["images"], "train_seconds": round(c["seconds"], 1),
            "weights": "EMA" if ema else "optimised", "rd_weights": Path(ckpt["rd_weights"]).name}
    return head.eval(), info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("out", help="destination .safetensors (a .json is written beside it)")
    ap.add_argument("--meta", default="{}", help="extra JSON metadata for the model card")
    ap.add_argument("--raw", action="store_true", help="RD checkpoints: the optimised weights, not the EMA")
    a = ap.parse_args(argv)
    keys = torch.load(a.checkpoint, map_location="cpu", weights_only=True).keys()
    model: SSVAE | RDSSVAE | LosslessHead
    if "rd_weights" in keys:
        model, info = load_lossless_checkpoint(Path(a.checkpoint), not a.raw)
    elif "ema" in keys:
        model, info = load_rd_checkpoint(Path(a.checkpoint), not a.raw)
    else:
        model, info = load_checkpoint_model(Path(a.checkpoint))
    info.update(json.loads(a.meta))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, Path(a.out), info)
    print(f"wrote {a.out} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters): {info}")


if __name__ == "__main__":
    main()
