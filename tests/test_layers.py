"""Weight-normalised layers and data-dependent initialisation (models/layers.py)."""
from __future__ import annotations

import torch

from ssvcodec.models.layers import DenseBlock, WNConv2d, WNConvTranspose2d, data_dependent_init, weight_norm_layers


def test_ddi_gives_unit_variance_preactivations() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(WNConv2d(3, 16), torch.nn.ELU(), DenseBlock(16, 16, growth=8, n_layers=3),
                              WNConvTranspose2d(16, 8, 2))
    x = torch.randn(32, 3, 16, 16) * 5 + 2
    data_dependent_init(net, lambda: net(x))
    stats = []
    hooks = [m.register_forward_hook(lambda m, i, o: stats.append(o)) for m in weight_norm_layers(net)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    assert len(stats) == len(weight_norm_layers(net)) == 9
    for out in stats:
        mean = out.mean(dim=(0, 2, 3))
        std = out.std(dim=(0, 2, 3), unbiased=False)
        assert mean.abs().max() < 1e-3
        assert (std - 1).abs().max() < 1e-3


def test_weight_norm_output_is_invariant_to_the_scale_of_v() -> None:
    conv = WNConv2d(3, 4)
    x = torch.randn(2, 3, 8, 8)
    y1 = conv(x)
    with torch.no_grad():
        conv.v.mul_(7.0)
    assert torch.allclose(conv(x), y1, atol=1e-5)
    up = WNConvTranspose2d(4, 2, 2)
    assert up(y1).shape == (2, 2, 16, 16)
