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


def _fake_spikingjelly(monkeypatch, version, legacy):
    """A stand-in SpikingJelly: LIFNode with a ``backend`` argument (<= 0.0.0.0.14) or without
    (2.x), recording what it was built with."""
    import sys
    import types

    built = []

    class LIFNode(torch.nn.Module):
        if legacy:
            def __init__(self, tau=2.0, decay_input=True, step_mode="s", backend="torch"):
                super().__init__()
                built.append(backend)
        else:
            def __init__(self, tau=2.0, decay_input=True, step_mode="s"):
                super().__init__()
                built.append(None)

        def forward(self, x):
            return x

    ab = types.ModuleType("spikingjelly.activation_based")
    ab.neuron = types.SimpleNamespace(LIFNode=LIFNode)
    ab.functional = types.SimpleNamespace(reset_net=lambda m: None)
    monkeypatch.setitem(sys.modules, "spikingjelly", types.ModuleType("spikingjelly"))
    monkeypatch.setitem(sys.modules, "spikingjelly.activation_based", ab)
    nb = _neurons()
    monkeypatch.setattr(nb, "spikingjelly_version", lambda: version)
    return nb, built


def test_spikingjelly_cupy_row_needs_the_release_that_has_it(monkeypatch):
    nb, built = _fake_spikingjelly(monkeypatch, "2.0.0", legacy=False)
    with pytest.raises(RuntimeError, match=r"2\.0\.0 has no CuPy backend.*0\.0\.0\.0\.14"):
        nb.spikingjelly_lif("cpu", "cupy")
    nb.spikingjelly_lif("cpu")  # its own implementation choice, no backend argument
    assert built == [None]
    labels = [p[0] for p in nb.peers(torch.device("cuda"))]
    assert "SpikingJelly LIFNode m (SJ_LIF_CUDA_IMPLEMENTATION=auto)" in labels
    assert "SpikingJelly LIFNode m (cupy)" in labels


def test_spikingjelly_legacy_cupy_row_gets_its_backend_and_numpy_alias(monkeypatch):
    import numpy as np

    had_alias = "int" in vars(np)  # NumPy >= 1.24 has none: the shim puts it back for the peer
    nb, built = _fake_spikingjelly(monkeypatch, "0.0.0.0.14", legacy=True)
    try:
        f = nb.spikingjelly_lif("cpu", "cupy")
        assert np.dtype("int64") == np.int and np.dtype("float32") != np.int
    finally:
        if not had_alias:
            vars(np).pop("int", None)
    nb.spikingjelly_lif("cpu")
    assert built == ["cupy", "torch"]
    x = torch.ones(2, 1, 3)
    assert torch.equal(f(x), x)
    cuda_peers = nb.peers(torch.device("cuda"), only=["spikingjelly"])
    assert [p[0] for p in cuda_peers] == ["SpikingJelly LIFNode m (torch)",
                                          "SpikingJelly LIFNode m (cupy)"]
    assert all(p[1] == "ours cuda LIF" for p in cuda_peers)
