"""A non-editable install (``pip install .``) works from any folder: the import names live under
``ssvcodec`` only, and the shipped weights travel as package data."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import synthetic

ROOT = Path(__file__).resolve().parent.parent


def test_non_editable_install_runs_from_another_folder(tmp_path: Path) -> None:
    if not (ROOT / "weights" / "ssvae-rd.safetensors").exists():
        pytest.skip("the shipped RD weights are absent")
    target, elsewhere, src = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "src"
    elsewhere.mkdir()
    # from a copy: setuptools builds in the source's build/, and a stale one would leak into the wheel
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__",
                                                             ".devdata", ".whl", "tests"))
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                        "--target", str(target), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")) == ["bin", "ssvcodec"]
    Image.fromarray(synthetic(40, 56)).save(elsewhere / "in.png")
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import ssvcodec.codec.rd_api as m; print(m.DEFAULT_RD_WEIGHTS)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(target) and Path(where).exists()
    for args in (["encode", "in.png", "-o", "a.ssv"], ["decode", "a.ssv", "-o", "out.png", "--progressive"]):
        r = subprocess.run([sys.executable, "-m", "ssvcodec.codec.cli", *args], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(elsewhere / "out.png"))
    assert out.shape == (40, 56, 3) and (elsewhere / "out_L1.png").exists()
