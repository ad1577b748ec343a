"""Helpers for the training tests: tiny real-data configs and subprocess runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Shared data folder: $SPIKING_DATA, default <repo>/../shared/data."""
    return Path(os.environ.get("SPIKING_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def nmnist_root() -> Path:
    root = data_root() / "nmnist-subset"
    if not (root / "NMNIST" / "Train").is_dir():
        msg = f"N-MNIST subset {root} is absent (set SPIKING_DATA)"
        if os.environ.get("SPIKING_REQUIRE_DATA"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


def tiny_args(root, out, name, **extra) -> list[str]:
    """CLI flags of a seconds-long CSNN run on a class-balanced slice of the real subset."""
    args = {"model": "csnn", "dataset": "nmnist", "data-root": str(root), "out-dir": str(out),
            "run-name": name, "epochs": 3, "batch-size": 16, "lr": 5e-3, "n-time-bins": 4,
            "max-train-samples": 64, "max-test-samples": 20, "augment-shift": 0, "seed": 3,
            "cache-dir": str(Path(out) / "cache"),
            "model-args": '{"channels": [4, 8], "dropout": 0.0, "backend": "reference"}'}
    args.update(extra)
    flags = []
    for k, v in args.items():
        flags += [f"--{k}", str(v)]
    return flags + ["--no-progress", "--no-plots"]


def env1() -> dict:
    """Environment for child processes: one thread each, repo importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def spiking_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "spiking", *args]


def run(cmd, timeout=300) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, check=False, env=env1(), capture_output=True, text=True,
                         timeout=timeout,
                         cwd=REPO)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout}\n{res.stderr}"
    return res
