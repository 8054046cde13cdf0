"""models.fit_context: a context grown into level 1 starts as the identity, fitting moves only the
context's parameters and lowers the fitted level's bits, and train_rd freezes small-grid contexts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssvcodec.models.fit_context import CachedFeatures, context_parameters, fit, small_grid_contexts
from ssvcodec.models.grow import grow
from ssvcodec.models.rd import RDSSVAE

from .conftest import synthetic, tiny_rd_config


def _crops(n: int, seed: int) -> np.ndarray:
    return np.stack([synthetic(128, 128, seed + i).transpose(2, 0, 1) for i in range(n)])


@pytest.mark.parametrize("level_1", [1, 2])
def test_fitting_a_grown_level_1_context_moves_only_it_and_lowers_its_bits(level_1: int) -> None:
    """A checkerboard (1) or four-pass (2) context grown into level 1."""
    torch.manual_seed(0)
    base = RDSSVAE(tiny_rd_config(context=(0, 1, 1))).eval()
    model = grow(base, {"context": [level_1, 1, 1]}).eval()
    assert small_grid_contexts(model, 128) == [0] and small_grid_contexts(model, 256) == []
    qs = np.linspace(*model.config.quality_range, 6)
    train, held = CachedFeatures(model, _crops(6, 0), qs), CachedFeatures(model, _crops(4, 10), qs[:4])
    idx = torch.arange(len(held))
    with torch.no_grad():  # grown: the same bits as before
        assert torch.equal(held.bits(model, idx, [0, 1, 2], train=False), held.bits(base, idx, [0, 1, 2], train=False))
    before = {n: p.clone() for n, p in model.named_parameters()}
    result = fit(model, train, held, [0], steps=30, batch=4, lr=3e-3, log=lambda m: None)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith("levels.0.ctx_") for n in moved)
    assert level_1 == 1 or any(".ctx_diag_" in n for n in moved) and any(".ctx_last_" in n for n in moved)
    assert {id(p) for p in context_parameters(model, [0])} == {id(p) for n, p in model.named_parameters()
                                                               if n.startswith("levels.0.ctx_")}
    assert result["levels"] == [1] and result["held_out_change_pct"] < 0
    assert sum(r["crops"] for r in result["by_quality"]) == len(held)
