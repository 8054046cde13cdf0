"""Shared fixtures: tiny models that run in milliseconds, and the shared data folder."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.config import ModelConfig

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_config(levels: int = 1, **kw) -> ModelConfig:
    """A few-thousand-parameter ssVAE with the real architecture."""
    base = dict(levels=levels, latent_stride=max(4, 2 ** levels), latent_channels=4, width=16,
                growth=8, dense_layers=1, head_width=8, head_layers=1, n_mix=3, flow_hidden=16,
                flow_checker_in=2, flow_channel=2, flow_checker_out=1)
    base.update(kw)
    return ModelConfig(**base)


def require_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data folder beside the repository), which is absent")
    return path
