"""The render a lossless chunk is coded against (models/exact_render.py): the same numbers on any
thread count and convolution backend, and close to the float64 render (its integer quantization)."""
from __future__ import annotations

import torch

from ssvcodec.models.exact_render import exact_render
from ssvcodec.models.rd import RDSSVAE

from .conftest import tiny_rd_config


def _level_and_state() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    model = RDSSVAE(tiny_rd_config()).double().eval()
    level = model.levels[-1]
    with torch.no_grad():
        for g in level.head_gain:  # a gain away from 1, as a trained model's
            g.lin.bias.normal_(0.0, 0.3)
    emb = model.embed(torch.tensor([2.0], dtype=torch.float64))
    state = torch.randn(1, model.config.width, 6, 10, dtype=torch.float64) * 3
    return level, state, emb


def test_exact_render_is_the_same_on_any_thread_count_and_backend() -> None:
    level, state, emb = _level_and_state()
    old_threads, old_mk = torch.get_num_threads(), torch.backends.mkldnn.enabled
    outs = []
    try:
        for threads, mk in ((1, True), (2, True), (1, False)):
            torch.set_num_threads(threads)
            torch.backends.mkldnn.enabled = mk
            outs.append(exact_render(level, state, emb))
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.mkldnn.enabled = old_mk
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_exact_render_is_the_float_render_up_to_its_rounding() -> None:
    level, state, emb = _level_and_state()
    with torch.no_grad():
        ref = level.render(state, emb)
    got = exact_render(level, state, emb)
    assert got.shape == ref.shape and got.dtype == torch.float64
    # a random tiny model's dense weights get ~6 bits each under the 2^24 bound (the trained
    # model's Kodak renders differ from float64 by at most 2 of 255 levels: module docstring)
    rms = float((got - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())
    assert 0 < rms < 1e-2
