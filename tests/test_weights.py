"""Shipped weights (weights/): they load, match their config, and reproduce the numbers their
model card states on a small fixed subset."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssvcodec.models.config import ModelConfig
from ssvcodec.models.evaluate import CARD_CHECK, card_check
from ssvcodec.models.io import WEIGHTS_DIR, load_model, read_meta

from .conftest import require_data

SHIPPED = sorted(WEIGHTS_DIR.glob("*.safetensors"))


def test_weights_folder_has_a_default_model_and_a_card() -> None:
    assert (WEIGHTS_DIR / "ssvae-codec.safetensors").exists()
    assert (WEIGHTS_DIR / "README.md").exists()
    for w in SHIPPED:
        assert w.stat().st_size < 25 * 2 ** 20
        assert w.with_suffix(".json").exists()


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_weights_reproduce_their_card(path: Path) -> None:
    data = require_data("cifar10", "test_000.webp").parent.parent
    model = load_model(path)
    meta = read_meta(path)
    check = meta["card_check"]
    assert {k: check[k] for k in CARD_CHECK} == CARD_CHECK
    assert card_check(model, data) == pytest.approx(check["nll_bpd"], abs=0.01)
    card = (WEIGHTS_DIR / "README.md").read_text()
    assert f"{check['nll_bpd']:.3f}" in card, "the model card must state the fixed-subset number"
    assert ModelConfig.from_dict(json.loads(path.with_suffix(".json").read_text())["config"]) == model.config
