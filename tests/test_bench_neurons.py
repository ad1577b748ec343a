"""benchmarks/neurons.py runs its GPU-only parts on the CPU at toy sizes, so that a session
that is lent a GPU for minutes does not spend them on a crash: the Open Neuromorphic replica
(ours and every installed peer, ratios against ours) and the table."""

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def _neurons():
    spec = importlib.util.spec_from_file_location("bench_neurons", REPO / "benchmarks" /
                                                  "neurons.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_open_neuromorphic_replica_runs_every_runner_and_compares_with_ours():
    pytest.importorskip("numba")
    nb = _neurons()
    rows = nb.bench_open_neuromorphic(torch.device("cpu"), 1, sizes=[16, 24], t=6, b=2)
    ours = [r for r in rows if r["impl"] == "ours cpu Linear+LIF"]
    assert len(ours) == 2 and all(r["fwd_bwd_ms"] > 0 for r in ours)
    peers = [r for r in rows if r["versus"] == "ours cpu Linear+LIF"]
    assert peers, "no peer row"  # snnTorch and Norse are test dependencies
    for r in peers:
        assert "error" in r or r["fwd_bwd_ratio"] > 0, r
    assert any("snnTorch" in r["impl"] and "fwd_bwd_ratio" in r for r in peers)
    text = nb.table(rows)
    assert text.count("\n") == len(rows) + 1 and "vs ours cpu Linear+LIF" in text
