"""Shipped weights: safetensors tensors + a JSON file with the configuration and metadata.
Never pickle. The fingerprint (first 16 bytes of the SHA-256 of the safetensors file) identifies
the weights inside every bitstream."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import LosslessConfig, ModelConfig, RDConfig
from .lossless import LosslessHead
from .rd import RDSSVAE, build_rd_model
from .ssvae import SSVAE, build_model

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "ssvae-codec.safetensors"
LOSSLESS_WEIGHTS = WEIGHTS_DIR / "ssvae-lossless.safetensors"


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for model cards and golden streams."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def save_weights(model: SSVAE | RDSSVAE | LosslessHead, path: Path, meta: dict[str, Any] | None = None) -> None:
    """Write ``path`` (.safetensors) and ``path.with_suffix('.json')`` (config + ``meta``)."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path))
    info = {"config": model.config.to_dict(), "meta": meta or {}}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def weights_fingerprint(path: Path) -> bytes:
    return hashlib.sha256(Path(path).read_bytes()).digest()[:16]


def load_model(path: Path = DEFAULT_WEIGHTS, device: str | torch.device = "cpu") -> SSVAE:
    """Build the model described by the JSON beside ``path`` and load its weights (strict)."""
    path = Path(path)
    cfg_path = path.with_suffix(".json")
    if not path.exists():
        raise FileNotFoundError(f"weights not found: {path}")
    if not cfg_path.exists():
        raise FileNotFoundError(f"model config not found beside the weights: {cfg_path}")
    info = json.loads(cfg_path.read_text())
    model = build_model(ModelConfig.from_dict(info["config"]))
    model.load_state_dict(load_file(str(path), device=str(device)), strict=True)
    return model.to(device).eval()


def load_any(path: Path, device: str | torch.device = "cpu") -> "SSVAE | RDSSVAE":
    """The model of ``path``, whichever family its JSON names: the rate-distortion ssVAE
    (``"kind": "rd"``) or the ELBO ssVAE."""
    path = Path(path)
    cfg_path = path.with_suffix(".json")
    if not cfg_path.exists():
        raise FileNotFoundError(f"model config not found beside the weights: {cfg_path}")
    info = json.loads(cfg_path.read_text())
    if info["config"].get("kind") != "rd":
        return load_model(path, device)
    if not path.exists():
        raise FileNotFoundError(f"weights not found: {path}")
    model = build_rd_model(RDConfig.from_dict(info["config"]))
    model.load_state_dict(load_file(str(path), device=str(device)), strict=True)
    return model.to(device).eval()


def load_lossless_head(path: Path = LOSSLESS_WEIGHTS, device: str | torch.device = "cpu") -> LosslessHead:
    """The lossless head of ``path`` (its JSON must name ``"kind": "lossless"``)."""
    path = Path(path)
    cfg_path = path.with_suffix(".json")
    if not path.exists() or not cfg_path.exists():
        raise FileNotFoundError(f"lossless head weights not found: {path} (and its .json)")
    info = json.loads(cfg_path.read_text())
    if info["config"].get("kind") != "lossless":
        raise ValueError(f"{path} does not hold lossless head weights")
    head = LosslessHead(LosslessConfig.from_dict(info["config"]))
    head.load_state_dict(load_file(str(path), device=str(device)), strict=True)
    return head.to(device).eval()


def read_meta(path: Path = DEFAULT_WEIGHTS) -> dict[str, Any]:
    return json.loads(Path(path).with_suffix(".json").read_text()).get("meta", {})
