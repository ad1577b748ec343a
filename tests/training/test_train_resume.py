"""Checkpoints: atomic writes, safe loading, and resume after SIGKILL == uninterrupted run."""

import os
import signal
import subprocess
import time

import pytest
import torch
from training_helpers import env1, nmnist_root, run, spiking_cmd, tiny_args  # noqa: F401

from spiking.training import checkpoint as ckpt


def test_atomic_save_keeps_old_file_when_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    ckpt.atomic_save({"a": torch.ones(2)}, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        ckpt.atomic_save({"a": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_load_rejects_foreign_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt.load(tmp_path / "nope.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a spiking training checkpoint"):
        ckpt.load(tmp_path / "other.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        ckpt.load(tmp_path / "bad.pt")


def test_rng_state_roundtrip():
    state = ckpt.rng_state()
    a = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    ckpt.set_rng_state(state)
    b = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def _epoch_of(path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - not there yet
        return 0


def test_resume_after_sigkill_matches_uninterrupted(tmp_path, nmnist_root):  # noqa: F811
    epochs = 4
    # learnable taus: their log_tau Parameters form a second AdamW group (no weight decay),
    # so the resume also restores a multi-group optimizer
    flags = dict(epochs=epochs, **{"max-train-samples": 96, "model-args": (
        '{"channels": [4, 8], "dropout": 0.0, "backend": "reference", "learn_tau": true}')})
    run(spiking_cmd("train", *tiny_args(nmnist_root, tmp_path, "full", **flags)))
    full = ckpt.load(tmp_path / "full")
    assert full["epoch"] == epochs
    assert any(k.endswith("log_tau_mem") for k in full["model"])
    assert [g["weight_decay"] for g in full["optimizer"]["param_groups"]] == [1e-4, 0.0]

    proc = subprocess.Popen(spiking_cmd("train", *tiny_args(nmnist_root, tmp_path, "killed",
                                                            **flags)),
                            env=env1(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and _epoch_of(path) < 1:
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = ckpt.load(path)["epoch"]
    assert 1 <= killed_at < epochs

    res = run(spiking_cmd("train", "--resume", str(tmp_path / "killed")))
    assert f"after epoch {killed_at}/{epochs}" in res.stdout
    resumed = ckpt.load(path)
    assert resumed["epoch"] == epochs
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), f"parameter {k} differs after resume"
    losses = [m["train_loss"] for m in full["metrics"]]
    assert losses == [m["train_loss"] for m in resumed["metrics"]]
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == epochs  # one record per epoch, none duplicated by the resume
