"""Converted snnTorch / Norse modules reproduce the peers' spikes and membranes exactly.

Each case drives the peer step by step as its users do and the converted module over the
whole sequence, in float64, T >= 500: spikes must be identical, membranes within 1e-9.
"""

import pytest
import torch
from torch import nn

from spiking import ALIF, LIF, CubaLIF, Sequential
from spiking.interop import from_norse, from_snntorch, state_from_norse
from spiking.models import Recurrent
from spiking.neurons.base import Cell

snn = pytest.importorskip("snntorch")
nt = pytest.importorskip("norse.torch")

F64 = torch.float64
T, B, N = 500, 3, 10
TOL = 1e-9


def check(label, ours_spk, peer_spk, pairs):
    """Identical spikes, a meaningful spike count, every (ours, peer) trace within TOL."""
    peer_spk = peer_spk.to(ours_spk.dtype)
    count, total = int(peer_spk.sum()), peer_spk.numel()
    errs = [float((a - b).detach().abs().max()) for a, b in pairs]
    print(f"{label}: spikes {count}/{total}, max abs membrane error {max(errs):.3g}")
    assert 0.02 * total < count < 0.9 * total, f"{label}: spike count {count}/{total}"
    assert torch.equal(ours_spk, peer_spk), f"{label}: spike trains differ"
    assert max(errs) <= TOL, f"{label}: membrane error {errs}"


def draw(g, lo, hi, shape=()):
    return torch.rand(shape, generator=g, dtype=F64) * (hi - lo) + lo


# ---- snnTorch -------------------------------------------------------------------------------

SNN_RESETS = [("subtract", True), ("zero", True), ("none", True), ("zero", False),
              ("none", False)]


def f32_exact(t):
    """snnTorch's spikes and resets are float32 (``(x > 0).float()``), so a 0-dim float64
    threshold or V multiplying them is rounded to float32 inside snnTorch: draw such values
    exactly representable in float32 so that float64 runs compare exactly."""
    return t.float().double()


def _leaky_params(seed):
    g = torch.Generator().manual_seed(seed)
    beta = draw(g, 0.6, 0.97, (N,) if seed % 2 else ())
    thr = f32_exact(draw(g, 0.5, 1.5))
    return g, beta, thr


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("reset,delay", SNN_RESETS)
def test_leaky(seed, reset, delay):
    g, beta, thr = _leaky_params(seed)
    m = snn.Leaky(beta=beta, threshold=thr, reset_mechanism=reset, reset_delay=delay,
                  learn_beta=seed == 2, learn_threshold=seed == 3).double()
    ours = from_snntorch(m)
    assert isinstance(ours, LIF)
    assert isinstance(getattr(ours, "log_tau_mem", None), nn.Parameter) == (seed == 2)
    assert isinstance(ours.threshold, nn.Parameter) == (seed == 3)
    x = (torch.randn(T, B, N, generator=g, dtype=F64) * 0.6 + 0.15) * thr
    mem = m.init_leaky()
    spk, mems = [], []
    for t in range(T):
        s, mem = m(x[t], mem)
        spk.append(s)
        mems.append(mem)
    o, _, tr = ours(x, record=True)
    check(f"Leaky {reset} delay={delay} seed={seed}", o, torch.stack(spk),
          [(tr.v, torch.stack(mems))])


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("reset,delay", [("subtract", True), ("none", True), ("zero", False)])
def test_synaptic(seed, reset, delay):
    g, beta, thr = _leaky_params(seed)
    alpha = draw(g, 0.3, 0.9, (N,) if seed == 3 else ())
    m = snn.Synaptic(alpha=alpha, beta=beta, threshold=thr, reset_mechanism=reset,
                     reset_delay=delay, learn_alpha=seed == 1).double()
    ours = from_snntorch(m)
    assert isinstance(ours, CubaLIF) and ours.current_first
    assert isinstance(getattr(ours, "log_tau_syn", None), nn.Parameter) == (seed == 1)
    x = (torch.randn(T, B, N, generator=g, dtype=F64) * 0.4 + 0.04) * thr
    syn, mem = m.init_synaptic()
    spk, syns, mems = [], [], []
    for t in range(T):
        s, syn, mem = m(x[t], syn, mem)
        spk.append(s)
        syns.append(syn)
        mems.append(mem)
    o, _, tr = ours(x, record=True)
    check(f"Synaptic {reset} delay={delay} seed={seed}", o, torch.stack(spk),
          [(tr.v, torch.stack(mems)), (tr.i, torch.stack(syns))])


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("kind", ["all_to_all", "one_to_one_scalar", "one_to_one_vector"])
@pytest.mark.parametrize("reset,delay", [("subtract", True), ("none", True), ("zero", False)])
def test_rleaky(seed, kind, reset, delay):
    g, beta, thr = _leaky_params(seed)
    if kind == "all_to_all":
        m = snn.RLeaky(beta=beta, threshold=thr, linear_features=N, reset_mechanism=reset,
                       reset_delay=delay)
        with torch.no_grad():
            m.recurrent.weight.copy_(torch.randn(N, N, generator=g) * 0.3)
            m.recurrent.bias.copy_(torch.randn(N, generator=g) * 0.05)
    else:
        v = f32_exact(draw(g, -0.6, 0.3, (N,) if kind.endswith("vector") else ()))
        m = snn.RLeaky(beta=beta, threshold=thr, V=v, all_to_all=False,
                       reset_mechanism=reset, reset_delay=delay)
    m = m.double()
    ours = from_snntorch(m)
    assert isinstance(ours, Recurrent) and isinstance(ours.neuron, LIF)
    bias = 0.0 if reset == "none" else 0.2  # without reset the membrane would only grow
    x = (torch.randn(T, B, N, generator=g, dtype=F64) * 0.6 + bias) * thr
    spk, mem = m.init_rleaky()
    spks, mems = [], []
    for t in range(T):
        # snnTorch returns float32 spikes; a float64 user feeds them back as float64 (exact)
        spk, mem = m(x[t], spk.to(F64), mem)
        spks.append(spk)
        mems.append(mem)
    o, _, tr = ours(x, record=True)
    check(f"RLeaky {kind} {reset} delay={delay} seed={seed}", o, torch.stack(spks),
          [(tr.v, torch.stack(mems))])


@pytest.mark.parametrize("seed", [1, 2])
def test_snntorch_sequential(seed):
    g, _, _ = _leaky_params(seed)
    n_in, n_hid, n_out = 8, 16, 6
    net = nn.Sequential(
        nn.Linear(n_in, n_hid),
        snn.Leaky(beta=float(draw(g, 0.7, 0.95)), init_hidden=True),
        nn.Linear(n_hid, n_out),
        snn.Leaky(beta=float(draw(g, 0.7, 0.95)), threshold=0.5, init_hidden=True, output=True),
    ).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(n_hid, n_in, generator=g) * 0.6)
        net[2].weight.copy_(torch.randn(n_out, n_hid, generator=g) * 0.5)
    ours = from_snntorch(net)
    assert isinstance(ours, Sequential) and len(ours) == 4
    x = torch.randn(T, B, n_in, generator=g, dtype=F64) + 0.3
    s1, m1, s2, m2 = [], [], [], []
    for t in range(T):
        # net(x[t]) as one call cannot run in float64: Leaky returns float32 spikes
        # ((x > 0).float()) which the next float64 Linear rejects, so the stack is stepped
        # layer by layer with the (exact, 0/1) spikes cast back to float64.
        spk1 = net[1](net[0](x[t])).to(F64)
        spk, mem = net[3](net[2](spk1))
        s1.append(spk1)
        m1.append(net[1].mem.clone())
        s2.append(spk)
        m2.append(mem)
    out, states = ours(x)
    h1, _, tr1 = ours[1](ours[0](x), record=True)
    _, _, tr2 = ours[3](ours[2](h1), record=True)
    check(f"Sequential layer 1 seed={seed}", h1, torch.stack(s1), [(tr1.v, torch.stack(m1))])
    check(f"Sequential out seed={seed}", out, torch.stack(s2), [(tr2.v, torch.stack(m2))])
    assert states[0] is None and states[1].v.shape == (B, n_hid)


def test_snntorch_surrogate_gradient_matches():
    """The mapped surrogate gives snnTorch's input gradient on a first step."""
    x = torch.randn(4, N, dtype=F64)
    for spike_grad, name in [(snn.surrogate.fast_sigmoid(slope=7), "fast_sigmoid"),
                             (snn.surrogate.atan(alpha=3.0), "atan"),
                             (snn.surrogate.sigmoid(slope=5), "sigmoid")]:
        m = snn.Leaky(beta=0.9, threshold=0.3, spike_grad=spike_grad).double()
        ours = from_snntorch(m)
        assert ours.surrogate.name == name
        xp, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        m(xp, m.init_leaky())[0].sum().backward()
        ours.step(xo)[0].sum().backward()
        torch.testing.assert_close(xo.grad, xp.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make,match", [
    (lambda: snn.Leaky(beta=0.9, graded_spikes_factor=2.0), "graded_spikes_factor"),
    (lambda: snn.Leaky(beta=0.9, state_quant=lambda v: v), "state_quant"),
    (lambda: snn.Leaky(beta=0.0), "beta"),
    (lambda: snn.Leaky(beta=-0.5), "beta"),
    (lambda: snn.Leaky(beta=0.9, reset_delay=False), "reset_delay=False"),
    (lambda: snn.Synaptic(alpha=0.5, beta=0.9, reset_mechanism="zero"), "zero"),
    (lambda: snn.Synaptic(alpha=0.0, beta=0.9), "alpha"),
    (lambda: snn.RLeaky(beta=0.9, linear_features=4, reset_mechanism="zero"), "zero"),
    (lambda: snn.RLeaky(beta=0.9, conv2d_channels=2, kernel_size=3), "conv2d"),
    (lambda: snn.Leaky(beta=0.9, spike_grad=snn.surrogate.triangular()), "spike_grad"),
    (lambda: snn.Leaky(beta=0.9, surrogate_disable=True), "surrogate_disable"),
    (lambda: snn.Leaky(beta=0.9, threshold=-1.0, reset_mechanism="zero", reset_delay=False),
     "threshold >= 0"),
    (lambda: snn.Alpha(alpha=0.9, beta=0.8), "Alpha"),
    (lambda: nn.LSTM(3, 4), "LSTM"),
    (lambda: nn.Sequential(nn.Linear(2, 2), nn.GRU(2, 2)), "GRU"),
])
def test_snntorch_unsupported(make, match):
    with pytest.raises(ValueError, match=match):
        from_snntorch(make())


def test_snntorch_surrogate_override_and_inhibition():
    with pytest.warns(UserWarning):
        m = snn.Leaky(beta=0.9, inhibition=True)
    with pytest.raises(ValueError, match="inhibition"):
        from_snntorch(m)
    m = snn.Leaky(beta=0.9, spike_grad=snn.surrogate.triangular())
    assert from_snntorch(m, surrogate="triangle").surrogate.name == "triangle"
    assert from_snntorch(snn.Leaky(beta=1.0)).tau_mem.isinf().all()


# ---- Norse ----------------------------------------------------------------------------------

def _lif_p(seed, per_neuron=False):
    g = torch.Generator().manual_seed(100 + seed)
    # v_leak / v_reset are dyadic: Norse builds its initial v in float32 (module/lif.py)
    v_leak = torch.tensor([-0.25, 0.0, 0.125][seed % 3], dtype=F64)
    p = nt.LIFParameters(
        tau_mem_inv=draw(g, 50.0, 200.0, (N,) if per_neuron else ()),
        tau_syn_inv=draw(g, 100.0, 300.0),
        v_leak=v_leak,
        v_th=draw(g, 0.4, 0.9, (N,) if per_neuron else ()),
        v_reset=torch.tensor([0.0, -0.5, 0.25][seed % 3], dtype=F64),
    )
    return g, p


def _lsnn_p(seed):
    g = torch.Generator().manual_seed(200 + seed)
    return g, nt.LSNNParameters(
        tau_mem_inv=draw(g, 50.0, 200.0), tau_syn_inv=draw(g, 100.0, 300.0),
        tau_adapt_inv=draw(g, 5.0, 50.0), v_leak=torch.tensor(0.0, dtype=F64),
        v_th=draw(g, 0.3, 0.8), v_reset=draw(g, -0.3, 0.0), beta=draw(g, 0.05, 0.5),
        method="super", alpha=100.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cell", [False, True])
def test_norse_lif(seed, cell):
    g, p = _lif_p(seed, per_neuron=seed == 1)
    x = torch.randn(T, B, N, generator=g, dtype=F64) * 4 + 0.8
    if cell:
        m = nt.LIFCell(p)
        ours = from_norse(m)
        assert isinstance(ours, Cell) and isinstance(ours.neuron, CubaLIF)
        zs, vs, iz = [], [], []
        state = None
        for t in range(T):
            z, state = m(x[t], state)
            zs.append(z)
            vs.append(state.v)
            iz.append(state.i)
        z, v, i = torch.stack(zs), torch.stack(vs), torch.stack(iz)
        neuron = ours.neuron
    else:
        m = nt.LIF(p, record_states=True)
        ours = neuron = from_norse(m)
        z, states = m(x)
        v, i = states.v, states.i
    o, _, tr = neuron(x, record=True)
    a_syn = neuron.params(x).alpha_syn
    check(f"norse LIF cell={cell} seed={seed}", o, z, [(tr.v, v), (a_syn * tr.i, i)])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("cell", [False, True])
def test_norse_lif_recurrent(seed, cell):
    g, p = _lif_p(seed)
    n_in = 6
    kw = {"autapses": seed == 1}
    m = nt.LIFRecurrentCell(n_in, N, p, **kw) if cell else nt.LIFRecurrent(
        n_in, N, p, record_states=True, **kw)
    m = m.double()
    x = torch.randn(T, B, n_in, generator=g, dtype=F64) * 2.5 + 0.5
    ours = from_norse(m)
    layer = ours.neuron if cell else ours
    assert isinstance(layer, Recurrent) and layer.autapses == (seed == 1)
    if cell:
        zs, vs, iz, state = [], [], [], None
        for t in range(T):
            z, state = m(x[t], state)
            zs.append(z)
            vs.append(state.v)
            iz.append(state.i)
        z, v, i = torch.stack(zs), torch.stack(vs), torch.stack(iz)
    else:
        z, states = m(x)
        v, i = states.v, states.i
    o, _, tr = layer(x, record=True)
    a_syn = layer.neuron.params(x).alpha_syn
    check(f"norse LIFRecurrent cell={cell} seed={seed}", o, z,
          [(tr.v, v), (a_syn * tr.i, i)])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["LSNN", "LSNNCell", "LSNNRecurrent", "LSNNRecurrentCell"])
def test_norse_lsnn(seed, kind):
    g, p = _lsnn_p(seed)
    recurrent = "Recurrent" in kind
    n_in = 6 if recurrent else N
    m = getattr(nt, kind)(*((n_in, N) if recurrent else ()), p=p)
    if not kind.endswith("Cell"):
        m.record_states = True
    m = m.double()
    x = torch.randn(T, B, n_in, generator=g, dtype=F64) * 3 + 0.6
    ours = from_norse(m)
    layer = ours.neuron if isinstance(ours, Cell) else ours
    neuron = layer.neuron if recurrent else layer
    assert isinstance(neuron, ALIF) and not neuron.current_first
    if kind.endswith("Cell"):
        zs, vs, iz, bs, state = [], [], [], [], None
        for t in range(T):
            z, state = m(x[t], state)
            zs.append(z)
            vs.append(state.v)
            iz.append(state.i)
            bs.append(state.b)
        z, v, i, b = (torch.stack(a) for a in (zs, vs, iz, bs))
    else:
        z, st = m(x)
        v, i, b = st.v, st.i, st.b
    o, _, tr = layer(x, record=True)
    check(f"norse {kind} seed={seed}", o, z,
          [(tr.v, v), (tr.i, i), (tr.a + neuron.threshold, b)])


def test_norse_sequential_state():
    g, p = _lif_p(0)
    _, q = _lsnn_p(0)
    net = nt.SequentialState(nt.Lift(nn.Linear(8, 12)), nt.LIF(p), nn.Linear(12, N),
                             nt.LSNN(q)).double()
    with torch.no_grad():  # drive the adapting last layer enough to spike
        net[2].weight.mul_(3.0)
        net[2].bias.add_(0.3)
    x = torch.randn(T, B, 8, generator=g, dtype=F64) * 3 + 1.0
    z, _ = net(x)
    ours = from_norse(net)
    assert isinstance(ours, Sequential) and len(ours) == 4
    out, states = ours(x)
    check("norse SequentialState", out, z, [(out, z)])
    assert states[1].i is not None and states[3].a is not None


def test_norse_state_conversion_continues_exactly():
    g, p = _lif_p(2)
    m = nt.LIFRecurrent(6, N, p).double()
    ours = from_norse(m)
    x = torch.randn(T, B, 6, generator=g, dtype=F64) * 2.5 + 0.5
    _, s_half = m(x[:200])
    z, s_end = m(x[200:], s_half)
    o, s_ours = ours(x[200:], state_from_norse(s_half, ours))
    a_syn = ours.neuron.params(x).alpha_syn
    check("norse state continuation", o, z,
          [(s_ours.neuron.v, s_end.v), (a_syn * s_ours.neuron.i, s_end.i)])
    _, q = _lsnn_p(1)
    cell = nt.LSNNCell(q)
    st = cell.initial_state(torch.zeros(B, N, dtype=F64))  # b is a scalar v_th here
    conv = state_from_norse(st, from_norse(cell))
    assert conv.a.shape == (B, N) and torch.all(conv.a == 0)


@pytest.mark.parametrize("make,match", [
    (lambda: nt.LIF(nt.LIFParameters(method="tanh")), "tanh"),
    (lambda: nt.LIF(nt.LIFParameters(method="heaviside")), "heaviside"),
    (lambda: nt.LIF(nt.LIFParameters(method="triangle", alpha=0.3)), "triangle"),
    (lambda: nt.LIF(nt.LIFParameters(method="adjoint")), "adjoint"),
    (lambda: nt.LSNN(adjoint=True), "adjoint"),
    (lambda: nt.LIF(nt.LIFParameters(tau_mem_inv=torch.tensor(-1.0))), "tau_mem_inv"),
    (lambda: nt.LIFBoxCell(), "LIFBoxCell"),
    (lambda: nt.SequentialState(nt.LIF(), nn.Flatten(2)), "Lift"),
])
def test_norse_unsupported(make, match):
    with pytest.raises(ValueError, match=match):
        from_norse(make())


def test_norse_surrogate_mapping_and_gradient():
    m = nt.LIFCell(nt.LIFParameters(tau_mem_inv=torch.tensor(100.0, dtype=F64),
                                    tau_syn_inv=torch.tensor(200.0, dtype=F64),
                                    v_th=torch.tensor(0.05, dtype=F64)))
    ours = from_norse(m)
    assert (ours.neuron.surrogate.name, ours.neuron.surrogate.alpha) == ("fast_sigmoid", 1.0)
    x = torch.randn(4, N, dtype=F64)
    xp, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    m(xp)[0].sum().backward()
    ours(xo)[0].sum().backward()
    torch.testing.assert_close(xo.grad, xp.grad, rtol=1e-9, atol=1e-14)
    assert xp.grad.abs().sum() > 0
    tanh = nt.LIF(nt.LIFParameters(method="tanh"))
    assert from_norse(tanh, surrogate="sigmoid").surrogate.name == "sigmoid"
