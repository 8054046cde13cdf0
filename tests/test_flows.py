"""RealNVP prior (models/flows.py): invertibility and exact log-determinants."""
from __future__ import annotations

import torch

from ssvcodec.models.flows import RealNVPPrior, squeeze2x2, unsqueeze2x2


def random_flow(channels: int = 2) -> RealNVPPrior:
    torch.manual_seed(0)
    flow = RealNVPPrior(channels, hidden=8, checker_in=2, channel=2, checker_out=1).double()
    for m in flow.modules():  # the last layers start at zero (identity): make the flow non-trivial
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.3)
    return flow


def test_squeeze_round_trip() -> None:
    x = torch.arange(2 * 3 * 4 * 6.).view(2, 3, 4, 6)
    assert torch.equal(unsqueeze2x2(squeeze2x2(x)), x)


def test_inverse_of_forward_is_identity() -> None:
    flow = random_flow()
    v = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    u, ld_f = flow(v)
    v2, ld_i = flow.inverse(u)
    assert not torch.allclose(u, v)
    assert torch.allclose(v2, v, atol=1e-10)
    assert torch.allclose(ld_f, -ld_i, atol=1e-10)


def test_log_det_equals_autograd_jacobian() -> None:
    flow = random_flow()
    u = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: flow.inverse(t.view(1, 2, 4, 4))[0].flatten(), u.flatten())
    expected = torch.linalg.slogdet(jac)[1]
    assert torch.allclose(flow.inverse(u)[1][0], expected, atol=1e-8)
    # log_prob = log N(f^-1(u)) + log|det|
    v = flow.inverse(u)[0]
    normal = torch.distributions.Normal(0.0, 1.0).log_prob(v).sum()
    assert torch.allclose(flow.log_prob(u)[0], normal + expected, atol=1e-8)
