"""Export a training checkpoint as shippable weights (safetensors + JSON; no optimiser state).

    python -m models.export runs/codec/checkpoint.pt weights/ssvae-codec.safetensors
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .config import ModelConfig
from .io import save_weights
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("out", help="destination .safetensors (a .json is written beside it)")
    ap.add_argument("--meta", default="{}", help="extra JSON metadata for the model card")
    a = ap.parse_args(argv)
    model, info = load_checkpoint_model(Path(a.checkpoint))
    info.update(json.loads(a.meta))
    save_weights(model, Path(a.out), info)
    print(f"wrote {a.out} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters): {info}")


if __name__ == "__main__":
    main()
