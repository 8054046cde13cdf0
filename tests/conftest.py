"""Shared fixtures: tiny models that run in milliseconds, and the shared data folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssvcodec.models.config import ModelConfig, RDConfig
from ssvcodec.models.io import save_weights
from ssvcodec.models.layers import data_dependent_init
from ssvcodec.models.rd import RDSSVAE
from ssvcodec.models.ssvae import build_model

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


def synthetic(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image with an edge and some noise, (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(xx / 9.0), 128 + 90 * np.cos(yy / 7.0), (xx + yy) % 256], axis=2)
    img[h // 2:, : w // 3] = 30
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def photo_dir(root: Path) -> Path:
    """A data folder in ../shared/data's layout with a few synthetic photos."""
    for sub, n, ext in (("wallpapers", 2, "webp"), ("bsds500/val", 2, "jpg")):
        d = root / "photos" / sub
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(synthetic(200, 260, i)).save(d / f"p{i}.{ext}", **({"lossless": True} if ext == "webp" else {}))
    return root


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Safetensors weights of a tiny K=2 codec-style model (data-dependent init, untrained)."""
    torch.manual_seed(0)
    model = build_model(tiny_config(2, latent_stride=8))
    x = torch.from_numpy(synthetic(32, 48).transpose(2, 0, 1)).unsqueeze(0)
    data_dependent_init(model, lambda: model(x))
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(model, path, {"note": "test model"})
    return path


def tiny_rd_config(**kw) -> RDConfig:
    """A few-thousand-parameter rate-distortion ssVAE with the real three-level layout."""
    base: dict = dict(width=8, latent_channels=(4, 4, 6), emb_dim=8)
    base.update(kw)
    return RDConfig(**base)


@pytest.fixture(scope="session")
def tiny_rd_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Safetensors weights of a tiny, untrained rate-distortion model."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("rdw") / "tiny-rd.safetensors"
    save_weights(RDSSVAE(tiny_rd_config()), path, {"note": "test model"})
    return path


def make_head_weights(path: Path, seed: int = 0, features: int = 0) -> Path:
    """A small lossless head whose outputs are not the identity (so the channel coefficients, the
    mean corrections and the scales all move), saved as weights; ``features``: it reads that many
    channels of the decoder's features (through non-zero weights)."""
    from ssvcodec.models.config import LosslessConfig
    from ssvcodec.models.lossless import LosslessHead

    torch.manual_seed(seed)
    head = LosslessHead(LosslessConfig(width=8, blocks=1, depth=2, features=features))
    with torch.no_grad():
        head.out.weight.normal_(0.0, 0.05)
        for f in head.feat:
            f.weight.normal_(0.0, 2.0)
    save_weights(head, path, {"note": "test head"})
    return path


@pytest.fixture(scope="session")
def tiny_head_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Safetensors weights of a small, untrained lossless head."""
    return make_head_weights(tmp_path_factory.mktemp("head") / "head.safetensors")


def run_cli(*args: str) -> int:
    """``ssvcodec ARGS`` in this process; its exit status."""
    from ssvcodec.codec.cli import main as cli_main

    try:
        cli_main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0
