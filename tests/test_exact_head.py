"""The lossless head in exact integer arithmetic (models/exact_head.py): float32 convolutions on
bounded integers are exact here, every layer respects its bound, the head's outputs are the same
numbers on any thread count and convolution backend, and quantization costs next to no bits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ssvcodec.models.config import LosslessConfig
from ssvcodec.models.exact_conv import ExactConv, verify_exact_float32
from ssvcodec.models.exact_head import ACT_BITS, ACT_LIMIT, ExactLosslessHead
from ssvcodec.models.io import LOSSLESS_WEIGHTS, load_lossless_head
from ssvcodec.models.lossless import LosslessHead

from .conftest import require_data, synthetic


def _head(seed: int = 0, features: int = 0) -> LosslessHead:
    torch.manual_seed(seed)
    head = LosslessHead(LosslessConfig(width=8, blocks=2, depth=2, features=features))
    with torch.no_grad():
        head.out.weight.normal_(0.0, 0.05)
        for f in head.feat:
            f.weight.normal_(0.0, 2.0)
            f.bias.normal_(0.0, 0.5)
    return head.eval()


def _features(h: int, w: int, channels: int = 5) -> list[torch.Tensor]:
    """Decoder-like features at 1/8, 1/4, 1/2 of (h, w), float32 as the exact render gives them."""
    g = torch.Generator().manual_seed(3)
    return [torch.randn(1, channels, h // s, w // s, generator=g) * 0.3 for s in (8, 4, 2)]


def test_float32_convolutions_are_exact_on_bounded_integers() -> None:
    assert verify_exact_float32()


def test_exact_conv_equals_the_integer_convolution_and_respects_its_bound() -> None:
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(6, 5, 3, 3, generator=g), torch.randn(6, generator=g)
    in_max = torch.tensor([255.0, 255.0, 1.0, 1000.0, 2048.0])
    conv = ExactConv(w, b, in_max, 1)
    mass = (conv.weight.double().abs() * in_max.double().view(1, -1, 1, 1)).sum((1, 2, 3)) + conv.bias.double().abs()
    assert float(mass.max()) < 2 ** 24
    assert float(conv.weight.abs().max()) > 2 ** 10  # the finest scale the bound allows, not a coarse one
    a = torch.stack([torch.randint(-int(m), int(m) + 1, (1, 9, 11), generator=g).double() for m in in_max], 1)
    want = F.conv2d(a, conv.weight.double(), conv.bias.double(), padding=1)
    assert torch.equal(conv(a).double(), want)
    # against the float weights: off by at most the rounding of each weight (half a step) times |a|
    step = torch.pow(2.0, -conv.shift.double()).view(1, -1, 1, 1)
    err = (want * step - F.conv2d(a, w.double(), b.double(), padding=1)).abs()
    bound = 0.5 * step * (F.conv2d(a.abs(), torch.ones(1, 5, 3, 3, dtype=torch.float64), padding=1) + 1)
    assert bool((err <= bound * (1 + 1e-9)).all())


def _outputs(head: LosslessHead, threads: int, mkldnn: bool) -> list[torch.Tensor]:
    x = torch.from_numpy(synthetic(32, 48, 3).transpose(2, 0, 1).copy()).unsqueeze(0).double()
    feats = _features(32, 48, head.config.features) if head.config.features else None
    got: list[torch.Tensor] = []

    def code(d: int, ph: int, c: int, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        got.extend([mean.clone(), scale.clone()])
        return mean.round().clamp(0, 255)

    old_threads, old_mk = torch.get_num_threads(), torch.backends.mkldnn.enabled
    try:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn
        with torch.no_grad():
            head.walk(x, torch.tensor([3.0], dtype=torch.float64), code, snapped=True, features=feats)
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.mkldnn.enabled = old_mk
    return got


@pytest.mark.parametrize("features", [0, 5])
def test_exact_head_gives_the_same_numbers_on_any_thread_count_and_backend(features: int) -> None:
    head = ExactLosslessHead(_head(features=features))
    ref = _outputs(head, 1, True)
    for threads, mk in ((2, True), (1, False)):
        assert all(torch.equal(a, b) for a, b in zip(ref, _outputs(head, threads, mk)))


def test_the_exact_heads_features_are_the_float_heads() -> None:
    """With decoder features, the exact head's means stay within a few activation-grid steps of
    the float head's, and the features move them (the 1x1 convolutions are not ignored)."""
    float_head = _head(features=5).double()
    exact = _outputs(ExactLosslessHead(float_head), 1, True)
    ref = _outputs(float_head, 1, True)
    means = lambda outs: torch.cat([o.flatten() for o in outs[::2]])  # noqa: E731
    assert float((means(exact) - means(ref)).abs().max()) < 0.5
    with torch.no_grad():
        for f in float_head.feat:
            f.weight.zero_()
    assert float((means(_outputs(float_head, 1, True)) - means(ref)).abs().max()) > 1.0


def test_an_exact_per_scale_head_runs_each_scales_own_network() -> None:
    """A head with a network per scale: the exact head's means stay near the float head's, and
    changing one scale's network changes only that scale's means."""
    from ssvcodec.models.lossless import grow_head, stages

    float_head = grow_head(_head(), {"per_scale": True}).double().eval()
    with torch.no_grad():
        float_head.nets[1].out.weight.normal_(0.0, 0.05)  # scale 2 now differs from the others
    exact = _outputs(ExactLosslessHead(float_head), 1, True)
    ref = _outputs(float_head, 1, True)
    assert max(float((a - b).abs().max()) for a, b in zip(exact[::2], ref[::2])) < 0.5
    with torch.no_grad():
        float_head.nets[1].out.weight.zero_()
    moved = [float((a - b).abs().max()) for a, b in zip(_outputs(float_head, 1, True)[::2], ref[::2])]
    per_stage = [max(moved[3 * i:3 * i + 3]) for i in range(len(stages(2)))]  # R, G, B means of each stage
    assert all(m > 0 for m in per_stage[:4]) and all(m == 0 for m in per_stage[4:])


def test_activations_stay_on_their_grid() -> None:
    head = ExactLosslessHead(_head())
    n = 2 ** ACT_BITS
    assert head._gelu.shape[0] == 2 * int(ACT_LIMIT * n) + 1
    assert torch.equal(head._gelu, torch.round(head._gelu))


def test_quantization_costs_next_to_no_bits() -> None:
    """On a photo crop and its exact render and decoder features (the shipped RD model at q = 2),
    the shipped head in exact integer arithmetic costs at most 0.3 % more than the float head's
    snapped code length, and differs from it by under 1 % (the session-14 head: 0.4 % less)."""
    import copy

    from ssvcodec.codec.rd_api import DEFAULT_RD_WEIGHTS
    from ssvcodec.models.io import load_any
    from ssvcodec.models.train_lossless import lossy_render

    if not LOSSLESS_WEIGHTS.exists() or not DEFAULT_RD_WEIGHTS.exists():
        pytest.skip(f"shipped weights {LOSSLESS_WEIGHTS} or {DEFAULT_RD_WEIGHTS} are absent")
    path = require_data("kodak", "kodim04.png")
    x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))[:128, :192].transpose(2, 0, 1).copy()).unsqueeze(0)
    rd = load_any(DEFAULT_RD_WEIGHTS).eval()
    q = torch.tensor([2.0])
    feats: list[torch.Tensor] = []
    xhat = lossy_render(rd, x, q, copy.deepcopy(rd).double(), feats)
    head = load_lossless_head()
    with torch.no_grad():
        ref = float(head.double().stage_bits(x, xhat, q, snapped=True, features=feats).sum())
        got = float(ExactLosslessHead(head).stage_bits(x, xhat, q, snapped=True, features=feats).sum())
    assert (got - ref) / ref < 3e-3 and abs(got - ref) / ref < 1e-2
