"""Training (models/train.py): learning-rate schedule, KL warm-up, exact resume, export."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.export import load_checkpoint_model
from models.train import kl_weight, learning_rate, main

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
