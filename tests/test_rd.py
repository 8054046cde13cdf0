"""The rate-distortion ssVAE (models/rd.py, models/rd_layers.py) and its trainer (models/train_rd.py)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssvcodec.models.config import RDConfig
from ssvcodec.models.io import load_any, save_weights
from ssvcodec.models.rd import (RDSSVAE, psnr_from_mse, rate_normalised_weight, rate_warmup_weights, residual_basis,
                                rounding_quantizer, upsample)
from ssvcodec.models.rd_layers import gaussian_bits
from ssvcodec.models.grow import add_level_changes, grow, remap_optimizer_state
from ssvcodec.models.train_rd import lr_at, plan_segment, widened

from .conftest import photo_dir, synthetic, tiny_rd_config

ROOT = Path(__file__).resolve().parent.parent


def batch(n: int = 2, h: int = 64, w: int = 128) -> torch.Tensor:
    return torch.stack([torch.from_numpy(synthetic(h, w, s).transpose(2, 0, 1).copy()) for s in range(n)])


def test_training_terms_cover_every_truncation_level() -> None:
    torch.manual_seed(0)
    model = RDSSVAE(tiny_rd_config()).train()
    t = model(batch(), torch.tensor([1.0, 6.0]))
    for k in (1, 2, 3):
        assert t[f"bpp_{k}"].shape == (2,) and bool((t[f"bpp_{k}"] > 0).all())
        assert t[f"mse_{k}"].shape == (2,) and bool((t[f"mse_{k}"] > 0).all())
    t["loss"].backward()
    for k, level in enumerate(model.levels):  # every level's posterior and render head learn from the loss
        for part in (level.to_latent[0], level.head[-1]):
            g = part.weight.grad
            assert g is not None and float(g.abs().sum()) > 0, f"level {k + 1} gets no gradient"
    assert float(model.enc[0].weight.grad.abs().sum()) > 0  # the shared encoder trunk


def test_rate_warmup_weighs_one_levels_rate_from_zero_to_one() -> None:
    """--rate-warmup LEVEL:START:END: beta of that level rises linearly from 0 to 1, the others stay
    1, and the loss counts the level's bits times beta (the logged bpp stay the true bits)."""
    assert rate_warmup_weights(4, 100, None) is None
    assert rate_warmup_weights(4, 90, (4, 100, 200)) == (1.0, 1.0, 1.0, 0.0)
    assert rate_warmup_weights(4, 150, (4, 100, 200)) == (1.0, 1.0, 1.0, 0.5)
    assert rate_warmup_weights(4, 250, (2, 100, 200)) == (1.0, 1.0, 1.0, 1.0)
    torch.manual_seed(0)
    model = RDSSVAE(tiny_rd_config()).eval()
    x, q = batch(), torch.tensor([1.0, 6.0])
    plain, warm = model(x, q), model(x, q, rate_weights=(1.0, 0.25, 1.0))
    assert torch.equal(plain["bpp_2"], warm["bpp_2"])
    assert (plain["loss"] - warm["loss"]).item() == pytest.approx(0.75 * plain["bpp_2"].mean().item(), abs=1e-4)


def test_rate_normalised_weights_scale_each_images_loss() -> None:
    """``weight`` multiplies each image's own loss (its rate + lambda * distortion) before the batch
    mean; rate_normalised_weight halves per 4 units of q and is 1 at the reference quality, and
    the trainer's --q-weight reaches the loss."""
    q = torch.tensor([0.0, 8.0])
    w = rate_normalised_weight(q, 0.25, 4.0)
    assert w.tolist() == pytest.approx([2.0, 0.5]) and rate_normalised_weight(torch.tensor([4.0]), 0.25, 4.0).item() == 1.0
    torch.manual_seed(0)
    model = RDSSVAE(tiny_rd_config()).eval()  # rounding: the same terms on every call
    x = batch()
    plain, weighted = model(x, q), model(x, q, w)
    per_image = sum(plain[f"bpp_{k}"] for k in (1, 2, 3)) + model.lam(q) * 255.0 ** 2 * sum(
        wk * plain[f"mse_{k + 1}"] for k, wk in enumerate(model.config.level_weights))
    assert plain["loss"].item() == pytest.approx(per_image.mean().item(), rel=1e-5)
    assert weighted["loss"].item() == pytest.approx((w * per_image).mean().item(), rel=1e-5)
    assert weighted["loss"].item() != pytest.approx(plain["loss"].item(), rel=1e-3)


def test_fresh_latents_span_a_quantization_step() -> None:
    """Regression: latents that start ~0.03 wide all round to the prior mean, and the rate term
    then collapses them (seen in training: level 3 carried 0 bits after 1,000 steps)."""
    torch.manual_seed(0)
    model = RDSSVAE(RDConfig()).eval()
    stds = []

    def quantize(k, latent, mu, sigma):
        stds.append(float(latent.std()))
        return rounding_quantizer(k, latent, mu, sigma)

    with torch.no_grad():
        for _ in model.top_down(torch.tensor([4.0]), quantize, batch(1, 64, 64).float() / 255 - 0.5):
            pass
    assert all(0.3 < s < 5.0 for s in stds), stds


def test_decoder_rebuilds_the_encoders_renders_from_z_hat_alone() -> None:
    """One top-down pass for both sides: replaying the encoder's z_hat without the image gives
    the same renders at every level."""
    torch.manual_seed(0)
    model = RDSSVAE(tiny_rd_config()).eval()
    x = batch(1).float() / 255 - 0.5
    q = torch.tensor([3.0])
    with torch.no_grad():
        enc = list(model.top_down(q, rounding_quantizer, x))
        replay = lambda k, latent, mu, sigma: (enc[k].z_hat, None)  # noqa: E731
        dec = list(model.top_down(q, replay, None, size=(64, 128)))
    for a, b in zip(enc, dec):
        assert torch.equal(a.render, b.render)


def test_subpixel_deconv_equals_the_transposed_conv() -> None:
    from ssvcodec.models.rd_layers import deconv, deconv_subpixel

    torch.manual_seed(0)
    for c_in, c_out, h, w in ((8, 8, 5, 7), (8, 3, 6, 4), (1, 2, 1, 1)):
        layer = deconv(c_in, c_out)
        x = torch.randn(2, c_in, h, w, dtype=torch.float64)
        with torch.no_grad():
            want = layer.double()(x)
            got = deconv_subpixel(layer, x)
        assert got.shape == want.shape == (2, c_out, 2 * h, 2 * w)
        assert torch.allclose(got, want, atol=1e-12), float((got - want).abs().max())


def test_gdn_off_diagonal_gamma_learns_from_zero() -> None:
    """Plain abs() gives a zero gradient at 0, which kept every trained GDN diagonal."""
    from ssvcodec.models.rd_layers import GDN, non_negative

    torch.manual_seed(0)
    x = torch.tensor([0.0, 0.0, -2.0, 3.0], requires_grad=True)
    (non_negative(x) * torch.tensor([-1.0, 1.0, 1.0, 1.0])).sum().backward()
    # at 0: only a gradient that makes the value grow passes; elsewhere d|x|/dx = sign(x)
    assert x.grad.tolist() == [-1.0, 0.0, -1.0, 1.0]

    gdn = GDN(4)
    h = torch.randn(2, 4, 5, 5)
    with torch.no_grad():  # the forward pass is unchanged: |gamma| and |beta| + 1e-6
        want = h / torch.nn.functional.conv2d(h.abs(), gdn.gamma.abs(), gdn.beta.abs() + 1e-6)
    out = gdn(h)
    assert torch.allclose(out, want)
    (-out.abs().sum()).backward()  # the loss falls as the outputs grow: gamma wants to be smaller...
    g = gdn.gamma.grad.view(4, 4)
    assert torch.all(g[~torch.eye(4, dtype=torch.bool)] == 0)  # ...so it stays at zero off the diagonal
    gdn.zero_grad()
    gdn(h).abs().sum().backward()  # the loss falls as gamma grows
    g = gdn.gamma.grad.view(4, 4)
    assert torch.all(g[~torch.eye(4, dtype=torch.bool)] < 0)


def test_gaussian_bits_are_a_distribution_over_the_integers() -> None:
    mu, sigma = torch.tensor(0.3), torch.tensor(1.7)
    k = torch.arange(-40, 41, dtype=torch.float32)
    assert abs(float(torch.pow(2.0, -gaussian_bits(mu + k, mu, sigma)).sum()) - 1.0) < 1e-4
    assert float(gaussian_bits(mu + 60, mu, sigma)) < 31  # the floor keeps far tails finite


def test_lambda_scale_and_config_checks() -> None:
    cfg = RDConfig()
    assert math.isclose(cfg.lam(0), 0.0009) and math.isclose(cfg.lam(8), 0.0009 * 256)
    with pytest.raises(ValueError, match="full size"):
        RDConfig(render_strides=(4, 2), latent_strides=(32, 32), latent_channels=(4, 4), level_weights=(1, 1))
    with pytest.raises(ValueError, match="between level"):
        RDConfig(latent_strides=(64, 128, 16))
    with pytest.raises(ValueError, match="enc_blocks"):
        RDConfig(enc_blocks=(1, 1))
    assert RDConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_upsample_is_the_identity_at_factor_one_and_keeps_constants() -> None:
    img = torch.rand(1, 3, 8, 8)
    assert upsample(img, 1) is img
    assert torch.allclose(upsample(torch.full((1, 3, 4, 4), 0.25), 4), torch.tensor(0.25))


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    lrs = [lr_at(s, 100, 1100, 1e-3, 1e-5, 100) for s in range(100, 1200)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[99] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:]))
    assert lrs[-1] == pytest.approx(1e-5)


def test_plan_segment_extends_stretches_or_keeps_the_schedule() -> None:
    seg = {"start": 100, "end": 500}
    assert plan_segment(seg, 300, 400, stretch=False) == seg  # a smaller --steps changes nothing
    assert plan_segment(seg, 300, 900, stretch=False) == {"start": 300, "end": 900}  # re-warm here
    assert plan_segment(seg, 300, 400, stretch=True) == {"start": 100, "end": 400}  # same warm-up, earlier end
    assert plan_segment(seg, 300, 900, stretch=True) == {"start": 100, "end": 900}
    assert plan_segment(seg, 500, 900, stretch=True) == {"start": 500, "end": 900}  # ended: a new segment
    with pytest.raises(SystemExit, match="already at step 300"):
        plan_segment(seg, 300, 250, stretch=True)


def test_weights_round_trip_through_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = RDSSVAE(tiny_rd_config())
    save_weights(model, tmp_path / "m.safetensors", {"steps": 3})
    back = load_any(tmp_path / "m.safetensors")
    assert isinstance(back, RDSSVAE) and back.config == model.config
    for (ka, a), (kb, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert ka == kb and torch.equal(a, b)


# ----- the trainer ------------------------------------------------------------------------------
def train_cmd(out: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ssvcodec.models.train_rd", "--out", str(out), "--data-dir", str(data), "--crop", "64",
            "--batch", "2", "--warmup", "2", "--val-every", "2", "--threads", "1", "--device", "cpu",
            "--config", json.dumps(tiny_rd_config().to_dict()),
            *(extra if "--init-from" in extra else ("--from-scratch", *extra))]


def test_resume_continues_exactly(tmp_path: Path) -> None:
    data = photo_dir(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "4"), check=True, env=env, capture_output=True)
    subprocess.run(train_cmd(tmp_path / "b", data, "--steps", "4", "--stop-at", "2"), check=True, env=env, capture_output=True)
    subprocess.run(train_cmd(tmp_path / "b", data, "--steps", "4"), check=True, env=env, capture_output=True)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert json.loads(a["counters"])["step"] == json.loads(b["counters"])["step"] == 4
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert sum(",train," in r for r in rows) == 4 and sum(",val_ema," in r for r in rows) == 6


def test_q_weight_reaches_the_trainers_loss(tmp_path: Path) -> None:
    """The same first step (seed, crops, q) logs another loss under --q-weight, and the checkpoint
    records the weighting, which a resumed run keeps."""
    data = photo_dir(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, extra in (("plain", ()), ("weighted", ("--q-weight", "0.25"))):
        subprocess.run(train_cmd(tmp_path / name, data, "--steps", "1", "--val-every", "0", *extra),
                       check=True, env=env, capture_output=True)
    first = {n: (tmp_path / n / "log.csv").read_text().splitlines()[1].split(",") for n in ("plain", "weighted")}
    assert first["plain"][8] == first["weighted"][8]  # the same q
    assert first["plain"][4] != first["weighted"][4]  # another loss
    run = json.loads(torch.load(tmp_path / "weighted" / "checkpoint.pt", weights_only=True)["run"])
    assert run["q_weight"] == [0.25, 4.0]
    subprocess.run(train_cmd(tmp_path / "weighted", data, "--steps", "2", "--val-every", "0"),
                   check=True, env=env, capture_output=True)  # resumed without the flag: the run keeps its weighting
    run = json.loads(torch.load(tmp_path / "weighted" / "checkpoint.pt", weights_only=True)["run"])
    assert run["q_weight"] == [0.25, 4.0]
    assert json.loads(torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["run"])["q_weight"] == [0.0, 4.0]


def test_extending_the_schedule_rewarms_and_export_resumes(tmp_path: Path) -> None:
    data = photo_dir(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    w = tmp_path / "w.safetensors"
    subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "2", "--export", str(w)), check=True, env=env, capture_output=True)
    assert json.loads(w.with_suffix(".json").read_text())["meta"]["steps"] == 2
    r = subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "4"), check=True, env=env, capture_output=True, text=True)
    assert "schedule 2..4" in r.stdout
    # without a checkpoint: from the exported weights, their counters carried on (a model card's
    # core-seconds, which count threads, processes and context fits, are not its wall seconds)
    card = json.loads(w.with_suffix(".json").read_text())
    card["meta"]["core_seconds"] = card["meta"]["train_seconds"] + 1000.0
    w.with_suffix(".json").write_text(json.dumps(card))
    r = subprocess.run(train_cmd(tmp_path / "c", data, "--steps", "3", "--init-from", str(w)), check=True, env=env,
                       capture_output=True, text=True)
    assert "start at step 2 from weights" in r.stdout and "schedule 2..3" in r.stdout
    ck = torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=True)
    assert json.loads(ck["counters"])["core_seconds"] > card["meta"]["core_seconds"]


def test_stretch_moves_the_running_segments_end_without_a_new_warmup(tmp_path: Path) -> None:
    """Also: --level-weights on a resumed run replaces the checkpoint's w_k from then on."""
    data = photo_dir(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "6", "--stop-at", "2"), check=True, env=env, capture_output=True)
    r = subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "9", "--stretch", "--stop-at", "3",
                                 "--level-weights", "0.25,0.5,1"), check=True, env=env, capture_output=True, text=True)
    assert "start at step 2 from checkpoint" in r.stdout and "schedule 0..9" in r.stdout
    last = [row.split(",") for row in (tmp_path / "a" / "log.csv").read_text().splitlines() if ",train," in row][-1]
    assert float(last[3]) == pytest.approx(lr_at(2, 0, 9, 1e-3, 1e-5, 2), rel=1e-2)  # step 3 on the stretched cosine
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert json.loads(ck["config"])["level_weights"] == [0.25, 0.5, 1.0]
    # a slower machine than planned: the end moves earlier, the step stays on the same warm-up
    r = subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "5", "--stretch"), check=True, env=env,
                       capture_output=True, text=True)
    assert "schedule 0..5" in r.stdout
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert json.loads(ck["counters"])["step"] == 5 and json.loads(ck["segment"]) == {"start": 0, "end": 5}
    r = subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "9", "--stretch"), env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "schedule 5..9" in r.stdout  # past its end, a larger --steps is a new segment


def test_quality_range_widens_step_by_step_and_the_checkpoint_records_it(tmp_path: Path) -> None:
    assert widened((0.0, 8.0), (-4.0, 9.0), 0.5) == (-0.5, 8.5)
    assert widened((-3.8, 8.9), (-4.0, 9.0), 0.5) == (-4.0, 9.0)
    assert widened((1.0, 8.0), (2.0, 6.0), 0.5) == (1.5, 7.5)  # a narrower target is approached too
    assert psnr_from_mse(float("inf")) == -math.inf and math.isnan(psnr_from_mse(float("nan")))
    data = photo_dir(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "3", "--q-range=-1,8", "--q-widen", "100"),
                       check=True, env=env, capture_output=True, text=True)
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert json.loads(ck["config"])["quality_range"] == [-0.3, 8.0]  # 0.1 per step
    qs = [float(row.split(",")[8]) for row in (tmp_path / "a" / "log.csv").read_text().splitlines() if ",train," in row]
    assert len(qs) == 3 and min(qs) >= -0.3, r.stdout


def _adam_step_then_remap(small: RDSSVAE, big: RDSSVAE, x: torch.Tensor,
                          q: torch.Tensor) -> tuple[torch.optim.Adam, dict]:
    """One Adam step on ``small``, then its optimizer state remapped onto the grown ``big``."""
    opt = torch.optim.Adam(small.parameters())
    small.train()
    small(x, q)["loss"].backward()
    opt.step()
    return opt, remap_optimizer_state(opt.state_dict(), small, big)


def test_grow_adds_identity_blocks_and_keeps_training(tmp_path: Path) -> None:
    """--grow on a trained run: the grown model computes what the trained one did, Adam's moments
    follow their parameters by name, the checkpoint records the new config, and resuming it
    without --grow (or with the same --grow) goes on."""
    torch.manual_seed(0)
    small = RDSSVAE(tiny_rd_config()).eval()
    big = grow(small, {"merge_blocks": [0, 1, 2], "enc_blocks": [0, 1, 1, 0, 0]}).eval()
    x, q = torch.randint(0, 256, (2, 3, 64, 64)).float(), torch.tensor([1.0, 6.0])
    with torch.no_grad():
        a, b = small(x, q), big(x, q)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in small.parameters())
    ctx = grow(small, {"context": [0, 1, 1]}).eval()  # a checkerboard context starts as no change
    with torch.no_grad():
        c = ctx(x, q)
        assert all(torch.equal(a[k], c[k]) for k in a)
        ctx.levels[2].ctx_head.weight.normal_(0.0, 0.3)
        moved_bits = ctx(x, q)["bpp_3"]
    assert not torch.equal(moved_bits, a["bpp_3"]) and torch.equal(ctx(x, q)["bpp_2"], a["bpp_2"])
    four = grow(ctx, {"context": [2, 1, 2]}).eval()  # four passes start as the checkerboard (or none)
    with torch.no_grad():
        d = four(x, q)
        assert all(torch.equal(d[k], ctx(x, q)[k]) for k in d)
        four.levels[0].ctx_diag_head.weight.normal_(0.0, 0.3)
        four.levels[0].ctx_last_head.weight.normal_(0.0, 0.3)
        assert not torch.equal(four(x, q)["bpp_1"], d["bpp_1"])
    with pytest.raises(ValueError, match="not remove or shrink"):
        grow(four, {"context": [1, 1, 2]})
    with pytest.raises(ValueError, match="may change only"):
        grow(small, {"width": 16})
    opt, moved = _adam_step_then_remap(small, big, x, q)
    names = [n for n, _ in big.named_parameters()]
    old = dict(zip([n for n, _ in small.named_parameters()], opt.state_dict()["state"].values()))
    assert all(torch.equal(moved["state"][i]["exp_avg"], old[n]["exp_avg"]) for i, n in enumerate(names) if n in old)
    assert not any(".merge_res." in names[i] or names[i].startswith("enc_res.") for i in moved["state"])
    torch.optim.Adam(big.parameters()).load_state_dict(moved)

    data = photo_dir(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "4", "--stop-at", "2"), check=True, env=env, capture_output=True)
    r = subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "4", "--stop-at", "3", "--grow", '{"merge_blocks": [0, 0, 1]}'),
                       check=True, env=env, capture_output=True, text=True)
    assert "grown by" in r.stdout
    assert json.loads(torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["config"])["merge_blocks"] == [0, 0, 1]
    r = subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "4", "--grow", '{"merge_blocks": [0, 0, 1]}'),
                       check=True, env=env, capture_output=True, text=True)
    assert "start at step 3 from checkpoint" in r.stdout and "grown" not in r.stdout
    # a context whose latent grid on the training crops is under 8x8 stays as it is (fit_context fits it)
    r = subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "6", "--grow", '{"context": [1, 1, 1]}'),
                       check=True, env=env, capture_output=True, text=True)
    assert "context of level(s) [1, 2] stays frozen" in r.stdout
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert not ck["model"]["levels.0.ctx_head.weight"].any() and not ck["model"]["levels.1.ctx_head.weight"].any()
    assert ck["model"]["levels.2.ctx_head.weight"].any()


def test_a_residual_level_starts_as_a_transform_coder_of_the_last_render() -> None:
    """add_level_changes(residual=True): the fourth level codes x - x_hat_3 in 4x4 blocks through
    an orthonormal DCT x colour basis, so at the start its render is x_hat_3 plus the dequantized
    coefficients: closer to x than x_hat_3 wherever the step is fine, and exactly x_hat_3 plus the
    synthesis of what was coded; the first three levels are untouched, its exact render (for
    lossless coding after it) is the float one to rounding, and no level can follow it."""
    basis = residual_basis()
    assert torch.allclose(basis @ basis.t(), torch.eye(48), atol=1e-5)
    assert torch.allclose(basis[0], torch.full((48,), 48 ** -0.5), atol=1e-6)  # the luma DC comes first
    torch.manual_seed(0)
    small = RDSSVAE(tiny_rd_config()).eval()
    big = grow(small, add_level_changes(small.config, 48, 0.5, residual=True)).eval()
    assert big.config.residual_last and big.config.latent_strides == (32, 16, 8, 4) and big.levels[3].residual
    assert not hasattr(big.levels[3], "merge") and big.levels[2].trans[0].weight.shape == small.levels[2].head[0].weight.shape
    x = torch.rand(1, 3, 64, 64) - 0.5
    q = torch.tensor([9.0])
    with torch.no_grad():
        a = list(small.top_down(q, rounding_quantizer, x))
        b = list(big.top_down(q, rounding_quantizer, x))
        for oa, ob in zip(a, b):
            assert torch.equal(oa.z_hat, ob.z_hat) and torch.equal(oa.render, ob.render)
        lvl = big.levels[3]
        step = big.quant_step(q).view(-1, 1, 1, 1)
        assert torch.allclose(b[3].render, lvl.render_residual(b[2].render, b[3].z_hat * step, big.embed(q)))
    err3, err4 = (b[2].render - x).pow(2).mean(), (b[3].render - x).pow(2).mean()
    assert err4 < 0.5 * err3 and float(b[3].bits.sum()) > 0
    big.train()
    big(x, torch.tensor([6.0]))["loss"].backward()
    assert float(big.levels[3].synth.weight.grad.abs().sum()) > 0 and float(big.levels[2].head[0].weight.grad.abs().sum()) > 0
    import copy
    big.eval()
    precise = copy.deepcopy(big).double()
    with torch.no_grad():  # the exact render (what lossless coding conditions on) is the float one, to rounding
        *_, ex3, ex4 = big.top_down(q, rounding_quantizer, x, precise=precise, precise_render=True)
        fl4 = lvl.render_residual(ex3.render.float(), ex4.z_hat.float() * step, big.embed(q))
    # (the synthesis reads the latent as 12-bit integers: on the grown shipped model at most 0.2 8-bit levels)
    assert (ex4.render.float() - fl4).abs().max() < 5e-3 and len(ex4.features) == 3  # level 3's features
    with pytest.raises(ValueError, match="no level after a residual level"):
        grow(big, add_level_changes(big.config, 8, 0.5))


def test_trainer_grows_a_refinement_level_and_trains_only_it(tmp_path: Path) -> None:
    """train_rd --grow (a refinement level) --train-only ... --rate-warmup ...: the level is added,
    only the named parameters move, the others stay as they were, and a bad warm-up is refused;
    --grow residual-level adds a residual level once (a resumed run is left as it is)."""
    data = photo_dir(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "4", "--stop-at", "2"), check=True, env=env, capture_output=True)
    before = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    r = subprocess.run(train_cmd(tmp_path / "b", data, "--steps", "2", "--grow", "residual-level"), check=True, env=env,
                       capture_output=True, text=True)
    assert "grown by" in r.stdout and "'residual_last': True" in r.stdout
    r = subprocess.run(train_cmd(tmp_path / "b", data, "--steps", "3", "--grow", "residual-level"), check=True, env=env,
                       capture_output=True, text=True)
    assert "start at step 2 from checkpoint" in r.stdout and "grown" not in r.stdout  # once
    grown = json.dumps(add_level_changes(tiny_rd_config(), 3, 0.5))
    r = subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "4", "--grow", grown, "--train-only", "levels.3.,levels.2.trans.",
                                 "--rate-warmup", "4:2:4"), check=True, env=env, capture_output=True, text=True)
    assert "grown by" in r.stdout
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert json.loads(ck["config"])["latent_strides"] == [32, 16, 8, 4] and json.loads(ck["run"])["rate_warmup"] == [4, 2, 4]
    assert all(torch.equal(t, ck["model"][n]) for n, t in before.items())
    assert ck["model"]["levels.3.merge.2.weight"].any()  # started at zero, trained
    r = subprocess.run(train_cmd(tmp_path / "a", data, "--steps", "6", "--rate-warmup", "5:2:4"), env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "--rate-warmup LEVEL:START:END" in r.stderr


def test_parameter_order_within_a_level_is_what_checkpoints_hold() -> None:
    """A checkpoint's Adam state is indexed by the order in which parameters are made, so a level's
    modules must keep it (a reordering silently hands one weight's moments to another)."""
    level = RDSSVAE(tiny_rd_config(context=(0, 1, 1))).levels[2]
    seen: list[str] = []
    for n, _ in level.named_parameters():
        top = n.split(".")[0]
        if top not in seen:
            seen.append(top)
    assert seen == ["to_latent", "latent_gain", "prior_net", "prior_gain", "prior_head", "ctx_net", "ctx_gain", "ctx_head",
                    "latent_ungain", "merge", "head", "head_gdn", "head_gain"]
    two = RDSSVAE(tiny_rd_config()).levels[1]  # a transition comes after the render head
    assert [n for n, _ in two.named_parameters()][-8:] == [
        "head_gain.2.lin.weight", "head_gain.2.lin.bias", "trans.0.weight", "trans.0.bias", "trans_gdn.0.beta",
        "trans_gdn.0.gamma", "trans_gain.0.lin.weight", "trans_gain.0.lin.bias"]


def test_grow_widens_a_latent_without_changing_what_the_model_computes() -> None:
    """--grow '{"latent_channels": ...}': the new channels start at zero and cost ~nothing, the
    renders are unchanged, the merge's new weights carry a gradient to the posterior's new rows,
    and Adam's moments follow the old entries."""
    torch.manual_seed(0)
    small = RDSSVAE(tiny_rd_config(context=(0, 1, 1))).eval()
    big = grow(small, {"latent_channels": [4, 6, 9]}).eval()
    assert big.config.latent_channels == (4, 6, 9)
    x = torch.rand(2, 3, 64, 64) - 0.5
    q = torch.tensor([1.0, 4.0])  # up to q_max / 2 (a quantization step >= 1): the prior's floor costs ~nothing
    with torch.no_grad():
        a = list(small.top_down(q, rounding_quantizer, x))
        b = list(big.top_down(q, rounding_quantizer, x))
    for oa, ob in zip(a, b):
        m = oa.z_hat.shape[1]
        # equal up to float rounding: the merge's convolution now also sums the zero channels (so
        # the prior's mean, and z_hat = mu + symbol, may differ in the last bits on some CPUs; a
        # changed symbol would differ by a whole step)
        assert torch.allclose(oa.render, ob.render, atol=1e-6) and torch.allclose(oa.z_hat, ob.z_hat[:, :m], atol=1e-4)
        assert torch.all(ob.z_hat[:, m:] == 0) and torch.allclose(oa.bits, ob.bits[:, :m], atol=1e-5)
        assert ob.bits[:, m:].numel() == 0 or float(ob.bits[:, m:].max()) < 1e-4
    big.train()
    big(x, q)["loss"].backward()
    assert float(big.levels[2].to_latent[2].weight.grad[6:].abs().sum()) > 0
    with pytest.raises(ValueError, match="only add latent channels"):
        grow(small, {"latent_channels": [4, 2, 6]})

    opt, moved = _adam_step_then_remap(small, big, x, q)
    names = [n for n, _ in big.named_parameters()]
    i = names.index("levels.2.merge.0.weight")
    old = opt.state_dict()["state"][[n for n, _ in small.named_parameters()].index("levels.2.merge.0.weight")]
    got = moved["state"][i]
    assert got["exp_avg"].shape == big.levels[2].merge[0].weight.shape
    assert torch.equal(got["exp_avg"][:, :6], old["exp_avg"][:, :6]) and torch.equal(got["exp_avg"][:, 9:], old["exp_avg"][:, 6:])
    assert torch.all(got["exp_avg"][:, 6:9] == 0) and torch.all(got["exp_avg_sq"][:, 6:9] > 0)
    torch.optim.Adam(big.parameters()).load_state_dict(moved)


def test_grow_adds_a_refinement_level_that_starts_as_the_last_one() -> None:
    """--grow with add_level_changes: a fourth level at half the last latent stride renders what
    the third did (its render head is the third's last stages, its merge ends at zero), the first
    three levels are untouched, the new level's latent has a rate and gets a gradient, two growths
    with one seed start alike (a model and its EMA copy), and other stride changes are refused."""
    torch.manual_seed(0)
    small = RDSSVAE(tiny_rd_config(context=(0, 1, 1))).eval()
    with torch.no_grad():  # a trained-looking last head, so that a wrong stage order would show
        for u in small.levels[2].head:
            u.weight.normal_(0.0, 0.2)
    changes = add_level_changes(small.config, 5, 0.5)
    big = grow(small, changes).eval()
    cfg = big.config
    assert (cfg.render_strides, cfg.latent_strides, cfg.latent_channels) == ((4, 2, 1, 1), (32, 16, 8, 4), (4, 4, 6, 5))
    assert cfg.level_weights == (0.1, 0.2, 0.5, 1.0) and cfg.kernels == (3, 3, 3, 1) and cfg.context == (0, 1, 1, 0)
    assert big.levels[3].merge[0].kernel_size == (1, 1) and big.levels[3].prior_net[0].kernel_size == (1, 1)
    x = torch.rand(2, 3, 64, 64) - 0.5
    q = torch.tensor([1.0, 7.0])
    with torch.no_grad():
        a = list(small.top_down(q, rounding_quantizer, x))
        b = list(big.top_down(q, rounding_quantizer, x))
    assert len(b) == 4
    for oa, ob in zip(a, b):
        assert torch.equal(oa.z_hat, ob.z_hat) and torch.equal(oa.render, ob.render)
    assert torch.allclose(b[3].render, a[2].render, atol=1e-5)
    assert b[3].z_hat.shape[-2:] == (16, 16) and float(b[3].bits.sum()) > 0
    again = grow(small, changes)
    assert all(torch.equal(t, again.state_dict()[n]) for n, t in big.state_dict().items())
    big.train()
    t = big(x, q)
    assert set(t) >= {"bpp_4", "mse_4"}
    t["loss"].backward()
    assert float(big.levels[3].merge[2].weight.grad.abs().sum()) > 0
    opt, moved = _adam_step_then_remap(small, big, x, q)  # the copied stages take their sources' moments
    old_names = [n for n, _ in small.named_parameters()]
    new_names = [n for n, _ in big.named_parameters()]
    for dst, src in (("levels.3.head.0.weight", "levels.2.head.1.weight"), ("levels.2.trans.0.weight", "levels.2.head.0.weight"),
                     ("levels.3.head_gdn.1.gamma", "levels.2.head_gdn.2.gamma")):
        assert torch.equal(moved["state"][new_names.index(dst)]["exp_avg"], opt.state_dict()["state"][old_names.index(src)]["exp_avg"])
    warm = moved["state"][new_names.index("levels.3.merge.0.weight")]  # the new level's own: warm second moments
    sibling = opt.state_dict()["state"][old_names.index("levels.2.merge.0.weight")]
    assert torch.all(warm["exp_avg"] == 0) and warm["exp_avg"].shape == big.levels[3].merge[0].weight.shape
    assert torch.allclose(warm["exp_avg_sq"], sibling["exp_avg_sq"].mean().expand_as(warm["exp_avg_sq"]))
    torch.optim.Adam(big.parameters()).load_state_dict(moved)
    with pytest.raises(ValueError, match="add one level"):
        grow(small, {**changes, "latent_strides": [32, 16, 8, 2]})
    with pytest.raises(ValueError, match="only to add a refinement level"):
        grow(small, {"level_weights": [0.1, 0.2, 0.5]})


def test_grow_widens_the_encoder_without_changing_what_the_model_computes() -> None:
    """--grow '{"enc_width": ...}': the trunk's new channels are zero, so the latents, bits and
    renders are what they were (up to float rounding), the next layers' new columns carry a
    gradient to the new rows, the decoder's parameters are untouched, and Adam's moments follow
    the old entries."""
    torch.manual_seed(0)
    small = RDSSVAE(tiny_rd_config(context=(0, 1, 1), enc_blocks=(0, 1, 0, 0, 1))).eval()
    with torch.no_grad():  # trained-looking GDNs: off-diagonal terms that a new channel must not disturb
        for g in small.enc_gdn:
            g.gamma.add_(0.05 * torch.rand_like(g.gamma))
        for r in small.enc_res:
            for b in r:
                b.c2.weight.normal_(0.0, 0.1)
    big = grow(small, {"enc_width": 12}).eval()
    assert big.config.encoder_width == 12 and big.config.width == 8 and big.enc[1].weight.shape == (12, 12, 5, 5)
    x = torch.rand(2, 3, 64, 64) - 0.5
    q = torch.tensor([1.0, 7.0])
    with torch.no_grad():
        fa, fb = small.encoder_features(x, small.embed(q)), big.encoder_features(x, big.embed(q))
        assert all(torch.allclose(fa[s], fb[s][:, :8], atol=1e-6) and torch.all(fb[s][:, 8:] == 0) for s in fa)
        for oa, ob in zip(small.top_down(q, rounding_quantizer, x), big.top_down(q, rounding_quantizer, x)):
            assert torch.allclose(oa.render, ob.render, atol=1e-5) and torch.allclose(oa.bits, ob.bits, atol=1e-4)
    decoder = {n: t for n, t in small.state_dict().items() if not n.startswith("enc") and ".to_latent.0." not in n}
    assert all(torch.equal(t, big.state_dict()[n]) for n, t in decoder.items())
    big.train()
    big(x, q)["loss"].backward()
    assert float(big.enc[0].weight.grad[8:].abs().sum()) > 0 and float(big.enc[4].weight.grad[8:].abs().sum()) > 0
    with pytest.raises(ValueError, match="only widen the encoder"):
        grow(big, {"enc_width": 10})

    opt, moved = _adam_step_then_remap(small, big, x, q)
    names = [n for n, _ in big.named_parameters()]
    old = opt.state_dict()["state"][[n for n, _ in small.named_parameters()].index("levels.1.to_latent.0.weight")]
    got = moved["state"][names.index("levels.1.to_latent.0.weight")]
    assert got["exp_avg"].shape == big.levels[1].to_latent[0].weight.shape  # (8, 12 features + 8 state, 3, 3)
    assert torch.equal(got["exp_avg"][:, :8], old["exp_avg"][:, :8]) and torch.equal(got["exp_avg"][:, 12:], old["exp_avg"][:, 8:])
    assert torch.all(got["exp_avg"][:, 8:12] == 0) and torch.all(got["exp_avg_sq"][:, 8:12] > 0)
    torch.optim.Adam(big.parameters()).load_state_dict(moved)


def test_floor_in_steps_changes_only_the_high_qualities_and_frees_unused_elements() -> None:
    """RDConfig.floor_in_steps (grown on): up to q_max / 2 nothing changes; above it an element
    left at its prior mean (a new, zero latent channel) costs ~0 bits instead of the latent
    unit's floor spanning several quantization steps, and z_hat and the renders stay as they were."""
    torch.manual_seed(0)
    small = RDSSVAE(tiny_rd_config(quality_range=(-4.0, 9.0))).eval()
    wide = grow(small, {"latent_channels": [4, 4, 8]}).eval()
    fixed = grow(wide, {"floor_in_steps": True}).eval()
    assert fixed.config.floor_in_steps and not wide.config.floor_in_steps
    x = torch.rand(1, 3, 64, 64) - 0.5
    with torch.no_grad():
        for q, same in ((-2.0, True), (4.0, True), (9.0, False)):
            a = list(wide.top_down(torch.tensor([q]), rounding_quantizer, x))
            b = list(fixed.top_down(torch.tensor([q]), rounding_quantizer, x))
            for oa, ob in zip(a, b):
                assert torch.equal(oa.z_hat, ob.z_hat) and torch.allclose(oa.render, ob.render)
                assert torch.equal(oa.bits, ob.bits) == same
            if not same:
                assert float(a[2].bits[:, 6:].mean()) > 0.5  # the latent unit's floor at step 0.18
                assert float(b[2].bits[:, 6:].max()) < 1e-4
    with pytest.raises(ValueError, match="switch floor_in_steps on, not off"):
        grow(fixed, {"floor_in_steps": False})


def test_ddp_two_gloo_processes(tmp_path: Path) -> None:
    """The same script under torchrun: 2 processes, gloo, 2 steps; rank 0 logs both ranks' images."""
    data = photo_dir(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
           *train_cmd(tmp_path / "ddp", data, "--steps", "2")[1:]]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "world 2" in r.stdout
    ck = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    c = json.loads(ck["counters"])
    assert (c["step"], c["images"]) == (2, 8)
    assert c["core_seconds"] > 1.9 * c["seconds"]  # two processes of one thread


def test_macs_count_the_context_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """models.macs counts a checkerboard level's extra context network in its decode."""
    from ssvcodec.models.io import save_weights
    from ssvcodec.models.macs import count_rd_macs, main as macs_main

    plain = RDSSVAE(tiny_rd_config()).eval()
    ctx = RDSSVAE(tiny_rd_config(context=(0, 0, 1))).eval()
    a, b = count_rd_macs(plain, 64, 64), count_rd_macs(ctx, 64, 64)
    assert a["decode to level 2"] == b["decode to level 2"] and b["decode to level 3"] > a["decode to level 3"]
    four = count_rd_macs(RDSSVAE(tiny_rd_config(context=(0, 0, 2))).eval(), 64, 64)
    assert four["decode to level 3"] > b["decode to level 3"]  # two more context networks
    save_weights(ctx, w := tmp_path / "ctx.safetensors", {"note": "test model"})
    macs_main(["--preset", "rd", "--weights", str(w), "--size", "64x64"])
    out = capsys.readouterr().out
    assert f"architecture of {w}" in out and f"{b['decode to level 3']:.2f} GMAC/MP" in out


def test_coding_passes_partition_the_grid_and_start_with_the_anchors() -> None:
    """The four passes cover every element once, in FOUR_PASS_ORDER, and their first two are the
    checkerboard's anchors (so the third pass sees what a checkerboard's second does)."""
    from ssvcodec.models.rd import anchor_mask, coding_passes

    for h, w in ((4, 6), (5, 3), (1, 1)):
        four = coding_passes(4, h, w)
        assert torch.equal(sum(m.int() for m in four), torch.ones(1, 1, h, w, dtype=torch.int))
        assert torch.equal(four[0] | four[1], anchor_mask(h, w)) and bool(four[0][0, 0, 0, 0])
        two = coding_passes(2, h, w)
        assert torch.equal(two[0], anchor_mask(h, w)) and torch.equal(two[1], ~anchor_mask(h, w))
    with pytest.raises(ValueError, match="1, 2 or 4 passes"):
        coding_passes(3, 4, 4)
