"""The lossless head (models.lossless): its discretized Laplace, the phase split, and training."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssvcodec.models.config import LosslessConfig
from ssvcodec.models.io import save_weights
from ssvcodec.models import lossless
from ssvcodec.models.lossless import (PHASE_ORDER, LosslessHead, from_phases, grow_head, laplace_bits, snap_mean,
                                       snap_scale, stages, to_phases)
from ssvcodec.models.rd import RDSSVAE
from ssvcodec.models.train_lossless import lossy_render

from .conftest import photo_dir, synthetic, tiny_rd_config

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize("mean,scale", [(0.3, 0.15), (17.2, 1.0), (128.0, 30.0), (254.9, 2.0), (-3.0, 5.0), (260.0, 0.5),
                                        (100.0, 200.0)])
def test_laplace_bins_sum_to_one(mean: float, scale: float) -> None:
    v = torch.arange(256.0, dtype=torch.float64)
    bits = laplace_bits(v, torch.full_like(v, mean), torch.full_like(v, scale))
    assert torch.isfinite(bits).all()
    assert float((2.0 ** -bits).sum()) == pytest.approx(1.0, abs=1e-9)


def test_laplace_values_and_gradients() -> None:
    # P(v = mean) for an integer mean: 1 - e^(-1/(2b)); bins 0 and 255 hold their tails
    b = torch.tensor([2.0], dtype=torch.float64)
    assert float(laplace_bits(torch.tensor([50.0]), torch.tensor([50.0]), b)) == pytest.approx(-np.log2(1 - np.exp(-0.25)))
    assert float(laplace_bits(torch.tensor([0.0]), torch.tensor([0.0]), b)) == pytest.approx(-np.log2(1 - 0.5 * np.exp(-0.25)))
    mean = torch.tensor([3.0, 250.0, 128.0], requires_grad=True)
    scale = torch.tensor([0.2, 0.2, 1.0], requires_grad=True)
    laplace_bits(torch.tensor([255.0, 0.0, 128.0]), mean, scale).sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(scale.grad).all()


def test_snapping_is_idempotent_and_bounded() -> None:
    s = torch.tensor([1e-3, 0.1, 1.0, 3.3, 1e4])
    assert torch.equal(snap_scale(snap_scale(s)), snap_scale(s))
    assert float(snap_scale(s).min()) == 2.0 ** -3 and float(snap_scale(s).max()) == 2.0 ** 7
    m = torch.tensor([-5.0, 17.123456, 300.0])
    assert torch.equal(snap_mean(snap_mean(m)), snap_mean(m)) and float(snap_mean(m)[1] * 64) == 1096.0


def test_phases_cover_every_pixel_once() -> None:
    x = torch.randint(0, 256, (2, 3, 6, 10))
    assert torch.equal(from_phases(to_phases(x)), x)
    assert sorted(PHASE_ORDER) == [0, 1, 2, 3]
    assert torch.equal(to_phases(x)[:, 3], x[:, :, 1::2, 1::2]) and torch.equal(to_phases(x)[:, 1], x[:, :, 0::2, 1::2])


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_the_stages_code_every_sub_pixel_once(depth: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lossless, "laplace_bits", lambda value, mean, scale: torch.ones_like(mean))
    head = LosslessHead(LosslessConfig(width=4, blocks=1, depth=depth))
    x = torch.randint(0, 256, (1, 3, 16, 24), dtype=torch.uint8)
    per_stage = head.stage_bits(x, x, torch.tensor([1.0]))[0]
    assert len(per_stage) == len(stages(depth)) == 4 + 3 * depth
    assert float(per_stage.sum()) == 3 * 16 * 24
    assert float(per_stage[0]) == 3 * 16 * 24 / 4 ** (depth + 1)  # only the coarsest quarter sees x_hat alone
    with pytest.raises(ValueError, match="multiples of"):
        head.stage_bits(x[..., :13], x[..., :13], torch.tensor([1.0]))


def test_the_head_learns_an_image_given_its_render() -> None:
    """A few Adam steps on one image: its bits given a noisy render fall well below the start."""
    torch.manual_seed(0)
    x = torch.from_numpy(synthetic(32, 32).transpose(2, 0, 1).copy()).unsqueeze(0)
    xhat = (x.float() + 6 * torch.randn(x.shape)).round().clamp(0, 255).to(torch.uint8)
    head = LosslessHead(LosslessConfig(width=8, blocks=1))
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    q = torch.tensor([2.0])
    with torch.no_grad():
        first = float(head(x, xhat, q)) / 1024
    for _ in range(60):
        loss = head(x, xhat, q).sum() / 1024
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(head(x, xhat, q)) / 1024 < first - 1.0, first


def test_lossy_render_is_the_decoders_8_bit_image() -> None:
    torch.manual_seed(0)
    rd = RDSSVAE(tiny_rd_config()).eval()
    x = torch.from_numpy(synthetic(64, 32).transpose(2, 0, 1).copy()).unsqueeze(0)
    r = lossy_render(rd, x, torch.tensor([4.0]))
    assert r.dtype == torch.uint8 and r.shape == x.shape


def test_the_exact_render_gives_the_features_a_head_reads() -> None:
    """lossy_render with the precise copy hands out the render head's stage inputs, coarse to
    fine at 1/8, 1/4, 1/2 of x; a head grown to read them computes what it did before (its new
    1x1 convolutions start at zero), and refuses to run without them."""
    torch.manual_seed(0)
    rd = RDSSVAE(tiny_rd_config()).eval()
    precise = RDSSVAE(tiny_rd_config()).double().eval()
    precise.load_state_dict(rd.state_dict())
    x = torch.from_numpy(synthetic(64, 32).transpose(2, 0, 1).copy()).unsqueeze(0)
    q = torch.tensor([4.0])
    feats: list[torch.Tensor] = []
    xhat = lossy_render(rd, x, q, precise, feats)
    assert [tuple(f.shape) for f in feats] == [(1, 8, 8, 4), (1, 8, 16, 8), (1, 8, 32, 16)]
    assert all(f.dtype == torch.float32 for f in feats)
    with pytest.raises(ValueError, match="precise"):
        lossy_render(rd, x, q, None, [])
    head = LosslessHead(LosslessConfig(width=8, blocks=1)).eval()
    with torch.no_grad():
        head.out.weight.normal_(0.0, 0.05)
    grown = grow_head(head, {"features": 8}).eval()
    with torch.no_grad():
        assert torch.equal(head.stage_bits(x, xhat, q), grown.stage_bits(x, xhat, q, features=feats))
        with pytest.raises(ValueError, match="features"):
            grown.stage_bits(x, xhat, q)
    with pytest.raises(ValueError, match="can only grow"):
        grow_head(head, {"depth": 1})


def test_a_widened_and_deepened_head_computes_what_it_did_and_its_new_channels_learn() -> None:
    """grow_head's width and blocks (Net2Net-style): the same bits before any step, gradients on
    the new channels' weights, and no shrinking."""
    torch.manual_seed(0)
    x = torch.from_numpy(synthetic(32, 32).transpose(2, 0, 1).copy()).unsqueeze(0)
    xhat = (x.to(torch.int16) + torch.randint(-3, 4, x.shape, dtype=torch.int16)).clamp(0, 255).to(torch.uint8)
    q = torch.tensor([2.0])
    head = LosslessHead(LosslessConfig(width=8, blocks=1))
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    grown = grow_head(head, {"width": 12, "blocks": 2})
    assert grown.config.width == 12 and len(grown.blocks) == 2
    with torch.no_grad():
        assert torch.allclose(head.stage_bits(x, xhat, q), grown.stage_bits(x, xhat, q), rtol=1e-6, atol=1e-4)
    grown(x, xhat, q).sum().backward()
    assert float(grown.blocks[0].c1.weight.grad[:8, 8:].abs().sum()) > 0  # old rows read the new channels
    assert float(grown.out.weight.grad[:, 8:].abs().sum()) > 0
    with pytest.raises(ValueError, match="only grow"):
        grow_head(grown, {"width": 8})


def test_a_head_grown_per_scale_computes_what_it_did_and_its_scales_learn_apart() -> None:
    """grow_head's per_scale: each scale's network starts as the shared one (the same bits), a
    scale's loss reaches only that scale's network, and a per-scale head cannot share again."""
    torch.manual_seed(0)
    x = torch.from_numpy(synthetic(32, 32).transpose(2, 0, 1).copy()).unsqueeze(0)
    xhat = (x.to(torch.int16) + torch.randint(-3, 4, x.shape, dtype=torch.int16)).clamp(0, 255).to(torch.uint8)
    q = torch.tensor([2.0])
    head = LosslessHead(LosslessConfig(width=8, blocks=1, depth=2))
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    grown = grow_head(head, {"per_scale": True})
    assert len(grown.nets) == 2 and grown.layers(2)[0] is grown.nets[1].inp and grown.layers(0)[0] is grown.inp
    with torch.no_grad():
        assert torch.equal(head.stage_bits(x, xhat, q), grown.stage_bits(x, xhat, q))
    n_coarse = 4 + 3  # the stages of scales 2 and 1 come first (models.lossless.stages)
    grown.stage_bits(x, xhat, q)[:, n_coarse:].sum().backward()  # scale 0's stages only
    assert float(grown.inp.weight.grad.abs().sum()) > 0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in grown.nets.parameters())
    with pytest.raises(ValueError, match="cannot share"):
        grow_head(grown, {"per_scale": False})
    # a shared head's parameters keep the order of the heads before per_scale: checkpoints store
    # the optimiser's state by that order
    names = [n.split(".")[0] for n, _ in LosslessHead(LosslessConfig(width=8, blocks=1, features=4)).named_parameters()]
    assert list(dict.fromkeys(names)) == ["inp", "feat", "blocks", "out"]


def test_train_lossless_runs_and_resumes(tmp_path: Path) -> None:
    data = photo_dir(tmp_path / "data")
    rd = tmp_path / "rd.safetensors"
    torch.manual_seed(0)
    save_weights(RDSSVAE(tiny_rd_config()), rd, {"note": "test model"})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "ssvcodec.models.train_lossless", "--out", str(tmp_path / "run"), "--data-dir", str(data),
           "--rd-weights", str(rd), "--crop", "64", "--batch", "2", "--warmup", "1", "--val-every", "2", "--threads", "1",
           "--config", json.dumps({"width": 8, "blocks": 1}), "--from-scratch"]
    subprocess.run([*cmd, "--steps", "2"], check=True, env=env, capture_output=True)
    r = subprocess.run([*cmd, "--steps", "3"], check=True, env=env, capture_output=True, text=True)
    assert "start at step 2 from checkpoint" in r.stdout and "schedule 2..3" in r.stdout
    grow = ["--grow", json.dumps({"features": 8})]
    r = subprocess.run([*cmd, "--steps", "4", *grow], check=True, env=env, capture_output=True, text=True)
    assert "grown by {'features': 8}" in r.stdout
    r = subprocess.run([*cmd, "--steps", "5", *grow], check=True, env=env, capture_output=True, text=True)
    assert "start at step 4 from checkpoint" in r.stdout and "grown" not in r.stdout  # resumed, already grown
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert json.loads(ckpt["config"])["features"] == 8 and float(ckpt["model"]["feat.0.weight"].abs().sum()) > 0
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert sum(",train," in row for row in rows) == 5 and sum(",val_ema," in row for row in rows) == 6
    assert all(float(row.split(",")[-1]) > 0 for row in rows[1:])


def test_render_ahead_trains_on_the_same_batches_and_renders(tmp_path: Path) -> None:
    """--render-ahead moves the RD render into the loader's thread: the steps' qualities and
    losses are those of rendering in the training loop, to the last digit."""
    data = photo_dir(tmp_path / "data")
    rd = tmp_path / "rd.safetensors"
    torch.manual_seed(0)
    save_weights(RDSSVAE(tiny_rd_config()), rd, {"note": "test model"})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    logs = []
    for name, extra in (("inline", []), ("ahead", ["--render-ahead"])):
        subprocess.run([sys.executable, "-m", "ssvcodec.models.train_lossless", "--out", str(tmp_path / name),
                        "--data-dir", str(data), "--rd-weights", str(rd), "--crop", "64", "--batch", "2",
                        "--warmup", "1", "--val-every", "0", "--threads", "1", "--steps", "3", "--from-scratch",
                        "--config", json.dumps({"width": 8, "blocks": 1, "features": 8}), *extra],
                       check=True, env=env, capture_output=True)
        rows = [row.split(",") for row in (tmp_path / name / "log.csv").read_text().splitlines()[1:]]
        logs.append([(row[0], row[5], row[6]) for row in rows])  # step, q, bpp
    assert len(logs[0]) == 3 and logs[0] == logs[1]


def test_train_lossless_without_a_checkpoint_continues_from_weights(tmp_path: Path) -> None:
    """With no checkpoint, --init-from's head and its counters start the run, and a larger
    --steps opens a new schedule segment from their step (as train_rd does); --q-range sets the
    crops' lossy quality."""
    data = photo_dir(tmp_path / "data")
    rd, head = tmp_path / "rd.safetensors", tmp_path / "head.safetensors"
    torch.manual_seed(0)
    save_weights(RDSSVAE(tiny_rd_config()), rd, {"note": "test model"})
    save_weights(LosslessHead(LosslessConfig(width=8, blocks=1)), head,
                 {"steps": 5, "images_seen": 10, "train_seconds": 1.5})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "ssvcodec.models.train_lossless", "--out", str(tmp_path / "run"),
                        "--data-dir", str(data), "--rd-weights", str(rd), "--init-from", str(head), "--crop", "64",
                        "--batch", "2", "--warmup", "1", "--val-every", "0", "--threads", "1", "--steps", "6",
                        "--q-range", "1.5,1.5"],
                       check=True, env=env, capture_output=True, text=True)
    assert f"start at step 5 from weights {head}" in r.stdout and "schedule 5..6" in r.stdout
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert json.loads(ckpt["counters"])["step"] == 6 and json.loads(ckpt["counters"])["images"] == 12
    rows = [row.split(",") for row in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    assert [float(row[5]) for row in rows] == [1.5]  # --q-range: every crop of the step at q = 1.5


def test_the_coders_laplace_is_the_heads_and_round_trips() -> None:
    """codec.entropy's quantized Laplace decodes what it encoded, and its size is the head's
    estimate (laplace_bits) to within 1 %: the head's loss is the chunk's length."""
    from ssvcodec.codec.entropy import ChunkDecoder, ChunkEncoder

    rng = np.random.default_rng(0)
    means = snap_mean(torch.from_numpy(rng.uniform(-0.5, 255.5, 20000)))
    scales = snap_scale(torch.from_numpy(rng.uniform(0.2, 12.0, 20000)))
    sym = (means + scales * torch.from_numpy(rng.laplace(0, 1, 20000))).round().clamp(0, 255)
    enc = ChunkEncoder()
    enc.laplace(sym.numpy(), means.numpy(), scales.numpy())
    data = enc.finish()
    out = ChunkDecoder(data).laplace(means.numpy(), scales.numpy())
    assert np.array_equal(out, sym.numpy().astype(np.int32))
    estimate = float(laplace_bits(sym, means, scales).sum())
    assert len(data) * 8 == pytest.approx(estimate, rel=0.01)


def test_lossless_head_bench_codes_a_kodak_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bench script codes a real lossless stream per quality from a checkpoint (untrained head)
    and says it decodes bit for bit, beside WebP lossless of the same pixels (8.67 bpp on kodim23)."""
    from ssvcodec.bench import lossless_head

    from .conftest import require_data

    require_data("kodak", "kodim23.png")
    head = LosslessHead(LosslessConfig(width=4, blocks=1))
    ck = tmp_path / "head.pt"
    torch.save({"config": json.dumps(head.config.to_dict()), "ema": head.state_dict(), "model": head.state_dict(),
                "counters": json.dumps({"step": 0, "images": 0, "seconds": 0.0}), "rd_weights": "ssvae-rd.safetensors"}, ck)
    assert lossless_head.main([str(ck), "--qualities", "0", "--images", "kodim23.png", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    webp = float(out.split("WebP lossless ")[-1].split(" ")[0])
    assert "bit-exact 1/1" in out and 8.5 < webp < 8.9
