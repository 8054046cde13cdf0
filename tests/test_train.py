"""Training (models/train.py): learning-rate schedule, KL warm-up, exact resume, export."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssvcodec.models.export import load_checkpoint_model
from ssvcodec.models.train import kl_weight, learning_rate, main

from .conftest import require_data


def test_schedules() -> None:
    assert learning_rate(0, 2e-3, 0.999999, 1e-4) == 2e-3
    assert learning_rate(10 ** 7, 2e-3, 0.999999, 1e-4) == 1e-4          # floored
    assert learning_rate(1000, 2e-3, 0.999, 1e-4) == pytest.approx(2e-3 * 0.999 ** 1000)
    assert kl_weight(0, 100) == 0.0 and kl_weight(50, 100) == 0.5 and kl_weight(500, 100) == 1.0
    assert kl_weight(0, 0) == 1.0


def test_resume_is_exact(tmp_path: Path) -> None:
    data = require_data("cifar10", "train_000.webp").parent.parent
    common = ["--preset", "cifar-small", "--data", "cifar", "--data-dir", str(data), "--cifar-shards", "1",
              "--batch", "2", "--val-every", "0", "--threads", "1", "--kl-warmup-steps", "3"]
    main(common + ["--out", str(tmp_path / "a"), "--steps", "4"])
    main(common + ["--out", str(tmp_path / "b"), "--steps", "2"])
    main(common + ["--out", str(tmp_path / "b"), "--steps", "4"])           # resumes at step 2
    a, info_a = load_checkpoint_model(tmp_path / "a" / "checkpoint.pt")
    b, info_b = load_checkpoint_model(tmp_path / "b" / "checkpoint.pt")
    assert info_a["steps"] == info_b["steps"] == 4
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,images") and len(log) == 5 and "re_x" in log[0] and "kl_u" in log[0]


def test_init_from_continues_the_counters(tmp_path: Path) -> None:
    """Continuing from exported weights keeps step / images / KL warm-up of the run that made them.
    The data folder holds one training shard and no test shards, as a device run's may."""
    import csv
    import shutil

    data = tmp_path / "devdata"
    (data / "cifar10").mkdir(parents=True)
    shutil.copy(require_data("cifar10", "train_000.webp"), data / "cifar10")
    common = ["--preset", "cifar-small", "--data", "cifar", "--data-dir", str(data), "--cifar-shards", "1",
              "--batch", "2", "--val-every", "0", "--threads", "1", "--kl-warmup-steps", "4"]
    main(common + ["--out", str(tmp_path / "a"), "--steps", "2", "--export", str(tmp_path / "a.safetensors")])
    main(common + ["--out", str(tmp_path / "b"), "--steps", "5", "--init-from", str(tmp_path / "a.safetensors"),
                   "--lr-warmup-steps", "2"])
    with open(tmp_path / "b" / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [3, 4, 5]
    assert [int(r["images"]) for r in rows] == [6, 8, 10]
    assert [float(r["kl_weight"]) for r in rows] == [0.5, 0.75, 1.0]   # warm-up not restarted
    assert float(rows[0]["lr"]) == pytest.approx(0.5 * float(rows[1]["lr"]), rel=1e-3)  # lr ramp
    _, info = load_checkpoint_model(tmp_path / "b" / "checkpoint.pt")
    assert info["steps"] == 5


def test_report_plots_a_log(tmp_path: Path) -> None:
    from ssvcodec.models.report import plot, read_log, smooth

    log = tmp_path / "log.csv"
    rows = ["step,images,seconds,lr,size,bpd,kl_weight,grad_norm,skipped,val_bpd,kl_u,re_x"]
    for i in range(1, 41):
        rows.append(f"{i},{16 * i},{i},0.002,{64 if i % 4 else 32},{8 - i / 10},{min(1, i / 20)},1,0,"
                    f"{'' if i % 10 else 7 - i / 20},{i},{1000 - i}")
    log.write_text("\n".join(rows) + "\n")
    cols = read_log(log)
    assert cols["bpd"][0] == pytest.approx(7.9) and torch.isnan(torch.tensor(cols["val_bpd"][0]))
    assert smooth(cols["step"], 4)[0] == pytest.approx(2.5)
    paths = plot(cols, tmp_path / "run", "test", window=4)
    assert [p.name for p in paths] == ["run_bpd.png", "run_terms.png"] and all(p.stat().st_size > 1000 for p in paths)


def test_report_joins_a_run_and_its_continuation(tmp_path: Path) -> None:
    from ssvcodec.models.report import join_logs

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("step,images,bpd,val_bpd\n1,16,7.0,\n2,32,6.5,6.6\n")
    b.write_text("step,images,bpd,val_bpd,kl_u\n3,48,6.4,,5\n")
    log, starts = join_logs([a, b])
    assert list(log["step"]) == [1, 2, 3] and starts == [48.0]
    assert list(log["bpd"]) == [7.0, 6.5, 6.4]
    assert torch.isnan(torch.tensor(log["kl_u"][:2])).all() and log["kl_u"][2] == 5


def test_batch_stream_does_not_depend_on_prefetch_depth() -> None:
    """Batch s comes from its own seed, so drawing ahead in a thread changes nothing."""
    from ssvcodec.models.train import Batches, BatchStream

    data = require_data("cifar10", "train_000.webp").parent.parent
    batches = Batches("cifar", data, 32, 4, 0.0, cifar_shards=1)
    a, b = BatchStream(batches, seed=3, depth=1), BatchStream(batches, seed=3, depth=5)
    try:
        got_a = [a.get(s) for s in range(6)]
        got_b = [b.get(s) for s in (0, 1, 2, 3, 4, 5)]
        assert all(torch.equal(x, y) for x, y in zip(got_a, got_b))
        assert not torch.equal(got_a[0], got_a[1])
        assert torch.equal(b.get(9), a.get(9))  # a jump (resume) draws the same batch
    finally:
        a.close()
        b.close()
