"""NIR export: parameter mapping, round trip with identical outputs, peer importers."""

import numpy as np
import pytest
import torch
from torch import nn

import spiking
from spiking.models.recurrent import Recurrent

nir = pytest.importorskip("nir")
from spiking.hardware.export import from_nir, to_nir, write_nir


def _model():
    torch.manual_seed(0)
    return spiking.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 5 * 5, 8),
        spiking.CubaLIF(tau_mem=20e-3, tau_syn=5e-3, reset_delay=True),
        Recurrent(spiking.ALIF(), hidden_size=6, input_size=8),
        nn.Linear(6, 4, bias=False), spiking.LI(tau_mem=10e-3, normalize_input=True))


def test_round_trip_file_identical_outputs(tmp_path):
    m = _model()
    x = torch.rand(6, 2, 2, 5, 5) * 3
    path = write_nir(m, x, tmp_path / "m.nir", sidecar={"partitions": [[0, 1]]})
    assert (tmp_path / "m.nir.spiking.json").is_file()
    m2 = from_nir(path)
    with torch.no_grad():
        y1, _, rec1 = m(x, record=True)
        y2, _, rec2 = m2(x, record=True)
    assert torch.equal(y1, y2)
    assert any(r.sum() > 0 for r in rec1[3:5])          # the spiking layers did spike
    # the imported stack splits Recurrent's input projection into its own Linear layer
    for i, j in ((0, 0), (2, 2), (3, 3), (4, 5), (6, 7)):
        assert torch.equal(rec1[i], rec2[j])


def test_lif_parameters_follow_nir_equations():
    dt, tau = 1e-3, 10e-3
    for disc, norm in (("exp", False), ("exp", True), ("euler", False)):
        lif = spiking.LIF(tau_mem=tau, dt=dt, discretization=disc, normalize_input=norm,
                          threshold=0.7, v_leak=0.1)
        g = to_nir(spiking.Sequential(nn.Linear(2, 3), lif), torch.zeros(1, 1, 2))
        node = g.nodes["1"]
        a = np.exp(-dt / tau) if disc == "exp" else 1 - dt / tau
        gain = (1 - a) if norm else 1.0
        # discrete h = a v + (1 - a) v_leak + gain x  <->  tau dv/dt = (v_leak - v) + r I
        r_expected = gain / (1 - a) if disc == "exp" else gain * tau / dt
        assert np.allclose(node.tau, tau) and np.allclose(node.r, r_expected, rtol=1e-12)
        assert np.allclose(node.v_threshold, 0.7) and np.allclose(node.v_leak, 0.1)
        assert node.metadata["spiking_discretization"] == disc


def test_unsupported_layer_is_named():
    with pytest.raises(TypeError, match="GELU"):
        to_nir(spiking.Sequential(nn.Linear(2, 2), nn.GELU()), torch.zeros(1, 1, 2))


def test_snntorch_importer_reproduces_spikes():
    pytest.importorskip("snntorch")
    from snntorch.import_nir import import_from_nir

    torch.manual_seed(0)
    dt = 1e-4      # snnTorch's importer assumes dt = 1e-4 and Euler, resets to zero at once
    m = spiking.Sequential(
        nn.Linear(5, 4), spiking.LIF(tau_mem=1e-3, dt=dt, discretization="euler", reset="zero"),
        nn.Linear(4, 3), spiking.LIF(tau_mem=2e-3, dt=dt, discretization="euler", reset="zero"))
    x = torch.rand(20, 2, 5) * 2
    with torch.no_grad():
        y, _ = m(x)
        net = import_from_nir(to_nir(m, x))
        ys = []
        for t in range(x.shape[0]):
            o = net(x[t])
            ys.append(o[0] if isinstance(o, tuple) else o)
    assert y.sum() > 0 and torch.equal(torch.stack(ys), y)


def test_norse_importer_reproduces_spikes():
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(0)
    dt = 1e-3      # Norse integrates NIR's LIF with Euler and r = 1 (normalised input)
    m = spiking.Sequential(
        nn.Linear(5, 4), spiking.LIF(tau_mem=5e-3, dt=dt, discretization="euler",
                                     reset="zero", normalize_input=True))
    x = torch.rand(30, 2, 5) * 6
    with torch.no_grad():
        y, _ = m(x)
        net = norse.from_nir(to_nir(m, x), dt=dt)
        st, ys = None, []
        for t in range(x.shape[0]):
            o, st = net(x[t], st)
            ys.append(o)
    assert y.sum() > 0 and torch.equal(torch.stack(ys), y)
