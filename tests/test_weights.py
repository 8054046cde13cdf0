"""Shipped weights (weights/): they load, match their config, and reproduce the numbers their
model card states on a small fixed subset."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import numpy as np
from PIL import Image

from ssvcodec.bench.metrics import psnr
from ssvcodec.models.evaluate import CARD_CHECK, card_check
from ssvcodec.models.io import WEIGHTS_DIR, load_model, read_meta

from .conftest import require_data

SHIPPED = sorted(WEIGHTS_DIR.glob("*.safetensors"))
KIND = {p: json.loads(p.with_suffix(".json").read_text())["config"].get("kind") for p in SHIPPED}
RD = [p for p in SHIPPED if KIND[p] == "rd"]
HEADS = [p for p in SHIPPED if KIND[p] == "lossless"]
ELBO = [p for p in SHIPPED if p not in RD and p not in HEADS]


def test_weights_folder_has_the_default_models_and_a_card() -> None:
    assert (WEIGHTS_DIR / "ssvae-rd.safetensors").exists() and (WEIGHTS_DIR / "ssvae-codec.safetensors").exists()
    assert (WEIGHTS_DIR / "README.md").exists()
    for w in SHIPPED:
        assert w.stat().st_size < 25 * 2 ** 20
        assert w.with_suffix(".json").exists()


@pytest.mark.parametrize("path", RD, ids=[p.stem for p in RD])
def test_rd_weights_reproduce_their_card(path: Path) -> None:
    """The card's fixed check: a Kodak crop coded at the stated quality gives the stated bytes
    per level and PSNR (real bitstreams; decoding is deterministic, so they match exactly)."""
    check = read_meta(path)["card_check"]
    img = np.asarray(Image.open(require_data("kodak", check["image"])).convert("RGB"))
    r0, r1, c0, c1 = check["box"]
    from ssvcodec.codec.rd_api import RDCodec

    codec = RDCodec(path)
    data = codec.encode(img[r0:r1, c0:c1], quality=check["quality"])
    steps = list(codec.decode_progressive(data))
    assert [s.bytes_used for s in steps] == check["bytes"]
    assert [round(psnr(img[r0:r1, c0:c1], s.image), 2) for s in steps] == check["psnr"]
    card = (WEIGHTS_DIR / "README.md").read_text()
    assert f"{check['psnr'][-1]:.2f} dB" in card, "the model card must state the fixed-check number"


@pytest.mark.parametrize("path", HEADS, ids=[p.stem for p in HEADS])
def test_lossless_head_reproduces_its_card(path: Path) -> None:
    """The head's fixed check: the same Kodak crop as a lossless stream with the shipped RD
    weights, the stated bytes exactly, decoded bit for bit."""
    check = read_meta(path)["card_check"]
    img = np.asarray(Image.open(require_data("kodak", check["image"])).convert("RGB"))
    r0, r1, c0, c1 = check["box"]
    from ssvcodec.codec.rd_api import RDCodec

    codec = RDCodec(WEIGHTS_DIR / check["rd_weights"], lossless_weights=path)
    data = codec.encode(img[r0:r1, c0:c1], quality=check["quality"], lossless=True)
    assert len(data) == check["bytes"] and check["bit_exact"]
    assert np.array_equal(codec.decode(data), img[r0:r1, c0:c1])
    card = (WEIGHTS_DIR / "README.md").read_text()
    assert f"{check['bpp']:.3f} bpp" in card, "the model card must state the fixed-check number"


@pytest.mark.parametrize("path", ELBO, ids=[p.stem for p in ELBO])
def test_shipped_weights_reproduce_their_card(path: Path) -> None:
    data = require_data("cifar10", "test_000.webp").parent.parent
    model = load_model(path)
    meta = read_meta(path)
    check = meta["card_check"]
    assert {k: check[k] for k in CARD_CHECK} == CARD_CHECK
    assert card_check(model, data) == pytest.approx(check["nll_bpd"], abs=0.01)
    card = (WEIGHTS_DIR / "README.md").read_text()
    assert f"{check['nll_bpd']:.3f}" in card, "the model card must state the fixed-subset number"
