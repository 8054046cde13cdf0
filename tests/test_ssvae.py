"""The K-level ssVAE (models/ssvae.py), its operations and the IWAE estimate."""
from __future__ import annotations

import math

import pytest
import torch

from ssvcodec.models.evaluate import iwae_nll
from ssvcodec.models.layers import data_dependent_init
from ssvcodec.models.ssvae import build_model
from ssvcodec.models.transforms import Downscale2x, make_transform, pad_to_multiple

from .conftest import tiny_config


@pytest.mark.parametrize("levels", [0, 1, 2, 3])
@pytest.mark.parametrize("prior", ["realnvp", "normal", "mog"])
@pytest.mark.parametrize("finer_z", [False, True])
def test_every_level_count_works_at_odd_sizes(levels: int, prior: str, finer_z: bool) -> None:
    torch.manual_seed(levels)
    # finer_z: each z_k at the finest stride its prior allows (codec-style), else all at u's stride
    z_strides = tuple(2 ** (levels + 1 - k) for k in range(1, levels + 1)) if finer_z else ()
    if finer_z and levels == 0:
        pytest.skip("a VAE has no z_k")
    model = build_model(tiny_config(levels, prior=prior, z_strides=z_strides))
    for k in range(1, levels + 1):
        assert model.latent_shape(1, 48, 64, k)[2] == 48 // model.config.strides[k]
    x = torch.randint(0, 256, (2, 3, 40, 56), dtype=torch.uint8)
    terms = model(x)
    assert set(terms) >= {"re_x", "kl_u", "nelbo", "bpd", "log_weight"} | {f"re_y{k}" for k in range(1, levels + 1)} \
        | {f"kl_z{k}" for k in range(1, levels + 1)}
    for v in terms.values():
        assert v.shape == (2,) and torch.isfinite(v).all()
    assert torch.allclose(terms["bpd"], terms["nelbo"] / (3 * 40 * 56 * math.log(2)))
    for lv in range(1, levels + 2):
        assert model.reconstruct(x, lv).shape == x.shape
    assert model.generate(1, 40, 56).shape[:2] == (1, 3)
    assert model.interpolate(x[:1], x[1:], steps=3).shape == (3, 3, 40, 56)
    if levels:
        assert model.conditional_reconstruct(x).shape == x.shape
        y = model.pyramid(model.pad(x))[-2]
        assert model.super_resolve(y).shape[1] == 3


@pytest.mark.parametrize("transform", ["sketch", "grey"])
def test_single_channel_transforms(transform: str) -> None:
    model = build_model(tiny_config(1, transform=transform, latent_stride=4))
    x = torch.randint(0, 256, (1, 3, 16, 24), dtype=torch.uint8)
    ys = model.pyramid(x)
    assert ys[0].shape == (1, 1, 16, 24) and ys[0].dtype == torch.uint8
    assert torch.isfinite(model(x)["nelbo"]).all()
    assert model.conditional_reconstruct(x).shape == x.shape
    assert make_transform(transform)(x).shape == (1, 1, 16, 24)


def test_downscale_is_the_exact_rounded_box_mean() -> None:
    x = torch.tensor([[[[0, 1], [1, 1]], [[255, 255], [255, 254]], [[1, 2], [3, 4]]]], dtype=torch.uint8)
    assert Downscale2x()(x).flatten().tolist() == [1, 255, 3]  # 3/4 -> 1, 1019/4 -> 255, 10/4 -> 3 (2.5 up)


def test_padded_pixels_do_not_count() -> None:
    """A 16x20 image is padded to 16x24 (the model's multiple is 8): its RE_x must leave the 4
    padded columns out, so it is below RE_x of the same padded image given as a 16x24 input."""
    torch.manual_seed(0)
    model = build_model(tiny_config(1))
    assert model.config.pad_multiple == 8
    x = torch.randint(0, 256, (1, 3, 16, 20), dtype=torch.uint8)
    padded = pad_to_multiple(x, 8)
    assert padded.shape[-1] == 24
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    own, full = model(x, g())["re_x"].item(), model(padded, g())["re_x"].item()
    assert 0 < own < full


def test_iwae_is_at_least_the_elbo_and_grows_with_k() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(1)).eval()
    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    data_dependent_init(model, lambda: model(x))
    g = torch.Generator().manual_seed(0)
    elbo = torch.stack([model(x, g)["nelbo"] for _ in range(32)]).mean(0)   # E[-ELBO] per image
    nll = {k: iwae_nll(model, x, k, chunk=16, generator=g) for k in (1, 8, 64)}
    assert torch.allclose(nll[1].mean(), elbo.double().mean(), rtol=0.02)  # IWAE-1 is the ELBO
    assert nll[8].mean() < elbo.mean()                                      # tighter bound: lower NLL
    assert nll[64].mean() < nll[8].mean() < nll[1].mean()


def test_a_few_training_steps_lower_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(1))
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    x[:, :, :8] = 40  # some structure to learn
    data_dependent_init(model, lambda: model(x))
    opt = torch.optim.Adamax(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss = model(x, g)["bpd"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
