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


def test_learnt_time_constants_export_in_seconds_and_round_trip(tmp_path):
    """Learnable taus are Parameters log_tau_*; the export writes tau = exp(log_tau) in seconds
    and the re-imported (fixed-tau) model computes the same spikes."""
    torch.manual_seed(3)
    rec = Recurrent(spiking.ALIF(learn_tau=True, n_neurons=6, dt=1e-3), hidden_size=6,
                    input_size=5)
    m = spiking.Sequential(rec, nn.Linear(6, 3), spiking.LI(learn_tau=True, n_neurons=3))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "log_tau" in name:
                p.add_(torch.randn_like(p) * 0.5)       # per-neuron taus, as after training
    x = torch.rand(30, 2, 5) * 2
    path = write_nir(m, x, tmp_path / "learnt.nir")
    g = nir.read(path)
    sub = [n for n in g.nodes.values() if isinstance(n, nir.NIRGraph)]
    assert len(sub) == 1                                  # the Recurrent layer's subgraph
    alif = sub[0].nodes["lif"]
    li = [n for n in g.nodes.values() if isinstance(n, nir.LI)]
    assert len(li) == 1
    for got, want in ((alif.tau, rec.neuron.tau_mem), (li[0].tau, m[2].tau_mem),
                      (alif.metadata["spiking_tau_adapt"], rec.neuron.tau_adapt)):
        np.testing.assert_allclose(np.asarray(got), want.detach().double().numpy(), rtol=1e-12)
    assert len(set(np.round(np.asarray(alif.tau), 9))) == 6   # really per-neuron values
    m2 = from_nir(path)
    with torch.no_grad():
        assert torch.equal(m(x)[0], m2(x)[0])


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


def _pooled():
    from spiking.pooling import SumPool2d

    torch.manual_seed(3)
    m = spiking.Sequential(
        nn.Conv2d(2, 3, 3), nn.AvgPool2d(2), spiking.LIF(threshold=0.2, tau_mem=20e-3),
        nn.Conv2d(3, 4, 3, padding=1), SumPool2d(2, padding=1),
        spiking.LIF(threshold=0.2, tau_mem=20e-3, reset="zero"), nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5), spiking.LI(tau_mem=10e-3))
    with torch.no_grad():
        m[0].weight.abs_()              # excitatory first layer: both LIF layers spike
    return m


def test_pooling_round_trip_identical_outputs(tmp_path):
    from spiking.pooling import SumPool2d

    m = _pooled()
    x = (torch.rand(6, 2, 2, 10, 10) < 0.5).float() * 2
    g = to_nir(m, x)
    assert isinstance(g.nodes["1"], nir.AvgPool2d) and isinstance(g.nodes["4"], nir.SumPool2d)
    assert g.nodes["4"].padding.tolist() == [1, 1] and g.nodes["1"].stride.tolist() == [2, 2]
    m2 = from_nir(write_nir(m, x, tmp_path / "p.nir"))
    assert type(m2[1]) is nn.AvgPool2d and type(m2[4]) is SumPool2d
    with torch.no_grad():
        y1, _, rec1 = m(x, record=True)
        y2, _, rec2 = m2(x, record=True)
    assert rec1[2].sum() > 0 and rec1[5].sum() > 0
    for a, b in zip(rec1, rec2):
        assert torch.equal(a, b)
    assert torch.equal(y1, y2)


def test_models_with_to_sequential_export_and_unsupported_pools_are_named():
    from spiking.models.csnn import CSNN

    x = (torch.rand(3, 1, 2, 34, 34) < 0.3).float()
    g = to_nir(CSNN(channels=(2, 4), pool_kind="avg"), x)
    assert isinstance(g.nodes["4"], nir.AvgPool2d) and isinstance(g.nodes["8"], nir.LI)
    with pytest.raises(TypeError, match="max pooling"):
        to_nir(CSNN(channels=(2, 4)), x)
    with pytest.raises(TypeError, match="divisor_override"):
        to_nir(spiking.Sequential(nn.AvgPool2d(2, divisor_override=3)), torch.zeros(1, 1, 1, 4, 4))
    with pytest.raises(TypeError, match="MaxPool2d"):
        to_nir(spiking.Sequential(nn.MaxPool2d(2)), torch.zeros(1, 1, 1, 4, 4))


def test_delayed_rsnn_exports_delay_branches_and_round_trips(tmp_path):
    """A delayed projection (RSNN synaptic delays) -> K branches Delay((K-1-k) d dt) -> Linear
    into the next node; reading the file back gives the same taps and identical spikes."""
    from spiking.models.delays import DelayedLinear
    from spiking.models.rsnn import RSNN

    torch.manual_seed(0)
    m = RSNN(6, 3, hidden=(5, 4), delay_taps=3, delay_spacing=2, threshold=0.3).eval()
    x = (torch.rand(15, 2, 6) < 0.4).float()
    g = to_nir(m, x)
    dt = float(m.layers[0].neuron.dt)
    delays = {k: v for k, v in g.nodes.items() if isinstance(v, nir.Delay)}
    assert sorted(delays) == ["0_delay0", "0_delay1", "2_delay0", "2_delay1"]
    np.testing.assert_allclose(delays["0_delay0"].delay, np.full(6, 4 * dt), rtol=1e-12)
    np.testing.assert_allclose(delays["2_delay1"].delay, np.full(5, 2 * dt), rtol=1e-12)
    w = m.to_sequential()[0].conv.weight.detach().numpy()
    np.testing.assert_array_equal(g.nodes["0_tap1"].weight, w[:, :, 1])
    assert isinstance(g.nodes["0_tap2"], nir.Affine)       # zero delay: no Delay, the bias
    assert sorted(a for a, b in g.edges if b == "1") == ["0_tap0", "0_tap1", "0_tap2"]
    assert ("input", "0_delay0") in g.edges and ("input", "0_tap2") in g.edges
    m2 = from_nir(write_nir(m, x, tmp_path / "delayed.nir"))
    assert isinstance(m2[0], DelayedLinear) and (m2[0].taps, m2[0].spacing) == (3, 2)
    assert torch.equal(m2[0].conv.weight, m.to_sequential()[0].conv.weight)
    with torch.no_grad():
        y1, _, rec1 = m.to_sequential()(x, record=True)
        y2, _, rec2 = m2(x, record=True)
    assert rec1[1].sum() > 0 and rec1[3].sum() > 0
    for a, b in zip(rec1, rec2):
        assert torch.equal(a, b)


def test_foreign_delay_graph_follows_nir_semantics():
    """A graph from another tool (no metadata): per-input delays before an Affine, per-output
    delays after a Linear and a direct edge, all into one LIF (NIR sums a node's inputs,
    ``Delay`` is ``y(t) = x(t - delay)``). The imported projection must give that drive."""
    rng = np.random.default_rng(1)
    dt, n = 1e-3, 3
    w1, b1, w2 = rng.normal(size=(n, n)), rng.normal(size=n), rng.normal(size=(n, n))
    lag_in, lag_out = np.array([0, 2, 3]), np.array([4, 0, 1])
    nodes = {"in": nir.Input(input_type=np.array([n])),
             "d_in": nir.Delay(delay=lag_in * dt), "a": nir.Affine(weight=w1, bias=b1),
             "l": nir.Linear(weight=w2), "d_out": nir.Delay(delay=lag_out * dt),
             "lif": nir.LIF(tau=np.full(n, 0.01), r=np.full(n, 10.0), v_leak=np.zeros(n),
                            v_threshold=np.full(n, 1.0), v_reset=np.zeros(n)),
             "out": nir.Output(output_type=np.array([n]))}
    edges = [("in", "d_in"), ("d_in", "a"), ("a", "lif"), ("in", "l"), ("l", "d_out"),
             ("d_out", "lif"), ("in", "lif"), ("lif", "out")]
    m = from_nir(nir.NIRGraph(nodes=nodes, edges=edges), dt=dt)
    assert (m[0].taps, m[0].spacing) == (5, 1)
    x = rng.normal(size=(9, 2, n))

    def past(t, lag):
        return x[t - lag] if t - lag >= 0 else np.zeros_like(x[0])
    want = np.zeros_like(x)
    for t in range(x.shape[0]):
        want[t] = b1 + x[t]
        for i in range(n):
            want[t] += np.outer(past(t, lag_in[i])[:, i], w1[:, i])
        for j in range(n):
            want[t][:, j] += past(t, lag_out[j]) @ w2[j]
    with torch.no_grad():
        _, _, rec = m(torch.as_tensor(x), record=True)
    np.testing.assert_allclose(rec[0].numpy(), want, rtol=1e-12, atol=1e-12)


def test_bad_delay_graphs_are_named():
    lif = nir.LIF(tau=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2),
                  v_threshold=np.ones(2), v_reset=np.zeros(2))
    base = {"in": nir.Input(input_type=np.array([2])), "lif": lif,
            "out": nir.Output(output_type=np.array([2]))}
    off = {**base, "d": nir.Delay(delay=np.array([0.0, 1.5e-3]))}
    with pytest.raises(ValueError, match=r"Delay node 'd' has delay 0\.0015.*dt = 0\.001"):
        from_nir(nir.NIRGraph(nodes=off, edges=[("in", "d"), ("d", "lif"), ("lif", "out")]))
    split = {**base, "d": nir.Delay(delay=np.full(2, 1e-3)), "lif2": lif}
    with pytest.raises(ValueError, match="branches leaving node 'in' reach"):
        from_nir(nir.NIRGraph(nodes=split, edges=[("in", "d"), ("d", "lif"), ("in", "lif2"),
                                                  ("lif", "out")]))
    with pytest.raises(ValueError, match="needs a neuron layer"):
        from spiking.models.delays import DelayedLinear
        to_nir(spiking.Sequential(DelayedLinear(nn.Conv1d(2, 2, 2))), torch.zeros(3, 1, 2))


def test_two_weight_layers_in_a_branch_and_delay_size_mismatch_are_named():
    lif = nir.LIF(tau=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2),
                  v_threshold=np.ones(2), v_reset=np.zeros(2))
    nodes = {"in": nir.Input(input_type=np.array([2])), "lif": lif,
             "out": nir.Output(output_type=np.array([2])),
             "d": nir.Delay(delay=np.full(3, 1e-3)), "a": nir.Linear(weight=np.ones((2, 2)))}
    edges = [("in", "d"), ("d", "a"), ("a", "lif"), ("lif", "out")]
    with pytest.raises(ValueError, match="type mismatch"):       # NIR's own check
        nir.NIRGraph(nodes=nodes, edges=edges)
    with pytest.raises(ValueError, match=r"3 delays, expected one per inputs \(2\)"):
        from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    # Delay -> Linear -> Affine: the second weight layer is the join, not part of the branch,
    # so the branch's output reaches a node that is not the neuron
    two = {**nodes, "d": nir.Delay(delay=np.full(2, 1e-3)),
           "b": nir.Affine(weight=2 * np.eye(2), bias=np.zeros(2))}
    m = from_nir(nir.NIRGraph(nodes=two, edges=[("in", "d"), ("d", "a"), ("a", "b"),
                                                ("b", "lif"), ("lif", "out")]))
    assert [type(x).__name__ for x in m] == ["DelayedLinear", "Linear", "LIF"]
    x = torch.rand(5, 1, 2, dtype=torch.float64)
    with torch.no_grad():
        _, _, rec = m.double()(x, record=True)
    want = torch.zeros_like(x)
    want[1:] = x[:-1].sum(-1, keepdim=True) * 2
    torch.testing.assert_close(rec[1], want, rtol=0, atol=1e-12)
