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


def _build(config: dict[str, Any]) -> "SSVAE | RDSSVAE | LosslessHead":
    """The untrained model a weights JSON's config describes (by its ``kind``)."""
    kind = config.get("kind")
    if kind == "rd":
        return build_rd_model(RDConfig.from_dict(config))
    if kind == "lossless":
        return LosslessHead(LosslessConfig.from_dict(config))
    return build_model(ModelConfig.from_dict(config))


def load_any(path: Path, device: str | torch.device = "cpu") -> "SSVAE | RDSSVAE | LosslessHead":
    """The model of ``path``, whichever kind its JSON names: the rate-distortion ssVAE
    (``"kind": "rd"``), the lossless head (``"lossless"``) or the ELBO ssVAE; weights loaded
    strictly, in eval mode."""
    path = Path(path)
    cfg_path = path.with_suffix(".json")
    if not path.exists():
        raise FileNotFoundError(f"weights not found: {path}")
    if not cfg_path.exists():
        raise FileNotFoundError(f"model config not found beside the weights: {cfg_path}")
    model = _build(json.loads(cfg_path.read_text())["config"])
    model.load_state_dict(load_file(str(path), device=str(device)), strict=True)
    return model.to(device).eval()


def load_model(path: Path = DEFAULT_WEIGHTS, device: str | torch.device = "cpu") -> SSVAE:
    """The ELBO ssVAE of ``path`` (:func:`load_any` for weights of that kind)."""
    model = load_any(path, device)
    if not isinstance(model, SSVAE):
        raise ValueError(f"{path} does not hold ELBO ssVAE weights")
    return model


def load_lossless_head(path: Path = LOSSLESS_WEIGHTS, device: str | torch.device = "cpu") -> LosslessHead:
    """The lossless head of ``path`` (:func:`load_any` for weights of that kind)."""
    if not Path(path).exists() or not Path(path).with_suffix(".json").exists():
        raise FileNotFoundError(f"lossless head weights not found: {path} (and its .json)")
    head = load_any(path, device)
    if not isinstance(head, LosslessHead):
        raise ValueError(f"{path} does not hold lossless head weights")
    return head


def read_meta(path: Path = DEFAULT_WEIGHTS) -> dict[str, Any]:
    return json.loads(Path(path).with_suffix(".json").read_text()).get("meta", {})


def counters_from_weights(path: Path) -> dict[str, Any]:
    """The training counters (step, crops seen, seconds, core-seconds) that committed weights record
    in their model card's meta, so a run started from them continues their count."""
    meta = read_meta(path)
    counters: dict[str, Any] = {"step": int(meta.get("steps", 0)), "images": int(meta.get("images_seen", 0)),
                                "seconds": float(meta.get("train_seconds", 0.0))}
    if "core_seconds" in meta:  # else train_rd counts from the wall seconds (runs before it counted threads)
        counters["core_seconds"] = float(meta["core_seconds"])
    return counters
