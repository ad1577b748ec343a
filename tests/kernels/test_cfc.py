"""CfC kernel: golden traces per mode, ncps' CfCCell oracle, gradients, time scaling."""

from __future__ import annotations

import itertools

import pytest
import torch

from spiking.kernels import cfc as K

D = torch.float64


def lin(w, b):
    return (torch.tensor([w], dtype=D), torch.tensor([b], dtype=D))


def golden_params(mode):
    # H = 1, N_in = 1, no backbone: z = [x, h]
    p = K.CfCParams(backbone=(), f=lin([0.5, -1.0], 0.2), mode=mode, dt=0.01, time_scale=0.01)
    if mode == "pure":
        return p._replace(A=torch.tensor([1.5], dtype=D), w_tau=torch.tensor([-0.2], dtype=D))
    return p._replace(g=lin([1.0, 0.5], -0.1), h=lin([-0.7, 0.3], 0.05), tb=lin([0.4, 0.6], -0.3))


# Hand computation (math module), x = (1, 0, 0.5), timespans (0.01, 0.005, 0.03) s, so
# s = (1, 0.5, 3), h0 = 0. Step 1, default: f = 0.5 + 0.2 = 0.7, g = tanh(0.9) = 0.716298,
# hh = tanh(-0.65) = -0.571670, gate = sigmoid(-0.7*1 + 0.4 - 0.3) = sigmoid(-0.6) = 0.354344,
# h = 0.354344*0.716298 + 0.645656*(-0.571670) = -0.115287.
GOLDEN = {
    "default": [-0.11528668551382443, -0.048355981305568736, -0.19527374996420566],
    "no_gate": [-0.31785433291619913, -0.12660651148066343, -0.2836630694205818],
    # pure step 1: f = 0.7, h = -1.5*exp(-1*(0.2+0.7))*0.7 + 1.5 = 1.073102
    "pure": [1.073101857272371, 2.2658347408909862, 1.506438280096864],
}


@pytest.mark.parametrize("mode", K.MODES)
def test_golden_traces(mode):
    x = torch.tensor([1.0, 0.0, 0.5], dtype=D).reshape(3, 1, 1)
    ts = torch.tensor([0.01, 0.005, 0.03], dtype=D)
    p = golden_params(mode)
    y, st = K.reference(x, K.initial_state(x[0], p), p, timespans=ts)
    assert torch.allclose(y.flatten(), torch.tensor(GOLDEN[mode], dtype=D), atol=1e-12, rtol=0)
    assert torch.equal(st.h, y[-1])


def random_params(mode="default", n_in=3, hsz=4, units=5, layers=1, act="lecun_tanh", seed=0,
                  time_scale=1e-3):
    g = torch.Generator().manual_seed(seed)

    def L(o, i):
        return (torch.randn(o, i, generator=g, dtype=D) * 0.6, torch.randn(o, generator=g,
                                                                            dtype=D) * 0.3)

    sizes = [n_in + hsz] + [units] * layers
    bb = tuple(L(b, a) for a, b in itertools.pairwise(sizes))
    nz = sizes[-1]
    p = K.CfCParams(backbone=bb, f=L(hsz, nz), mode=mode, activation=act, dt=time_scale,
                    time_scale=time_scale)
    if mode == "pure":
        return p._replace(A=torch.randn(hsz, generator=g, dtype=D),
                          w_tau=torch.randn(hsz, generator=g, dtype=D))
    return p._replace(g=L(hsz, nz), h=L(hsz, nz), tb=L(hsz, nz))


NCPS_ACT = {"lecun_tanh": "lecun_tanh", "relu": "relu", "tanh": "tanh", "silu": "silu",
            "gelu": "gelu"}


@pytest.mark.parametrize("mode,layers,act", [("default", 1, "lecun_tanh"),
                                             ("default", 2, "silu"), ("no_gate", 1, "relu"),
                                             ("pure", 1, "tanh"), ("default", 0, "gelu")])
def test_matches_ncps_cfccell(mode, layers, act):
    pytest.importorskip("ncps")
    from ncps.torch import CfCCell
    torch.manual_seed(0)
    cell = CfCCell(3, 4, mode=mode, backbone_activation=NCPS_ACT[act], backbone_units=6,
                   backbone_layers=layers).double()
    wb = lambda m: (m.weight.detach(), m.bias.detach())
    bb = tuple(wb(m) for m in cell.backbone if isinstance(m, torch.nn.Linear)) if layers else ()
    if mode == "pure":
        p = K.CfCParams(backbone=bb, f=wb(cell.ff1), A=cell.A.detach().flatten(),
                        w_tau=cell.w_tau.detach().flatten(), mode=mode, activation=act)
    else:
        neg = (-cell.time_a.weight.detach(), -cell.time_a.bias.detach())
        p = K.CfCParams(backbone=bb, f=neg, g=wb(cell.ff2), h=wb(cell.ff1), tb=wb(cell.time_b),
                        mode=mode, activation=act)
    dt = 2e-3
    p = p._replace(dt=dt, time_scale=dt)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 3, generator=g, dtype=D)
    ts = (torch.rand(5, 3, generator=g, dtype=D) + 0.2) * dt
    h = torch.zeros(3, 4, dtype=D)
    outs = []
    with torch.no_grad():
        for t in range(5):
            o, h = cell(x[t], h, (ts[t] / dt).unsqueeze(-1))
            outs.append(o)
        y, st = K.reference(x, K.initial_state(x[0], p), p, timespans=ts)
    assert torch.allclose(y, torch.stack(outs), atol=1e-9, rtol=0)
    assert torch.allclose(st.h, h, atol=1e-9, rtol=0)


@pytest.mark.parametrize("mode", K.MODES)
def test_gradcheck_inputs_params_state_timespans(mode):
    p0 = random_params(mode, n_in=2, hsz=3, units=4, time_scale=1.0)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 2, generator=g, dtype=D).requires_grad_()
    h0 = (torch.randn(2, 3, generator=g, dtype=D) * 0.5).requires_grad_()
    ts = (torch.rand(3, 2, generator=g, dtype=D) + 0.5).requires_grad_()
    leaves, spec = [], []
    for name in ("backbone", "f", "g", "h", "tb", "A", "w_tau"):
        v = getattr(p0, name)
        if v is None:
            continue
        if name == "backbone":
            for w, b in v:
                leaves += [w.clone().requires_grad_(), b.clone().requires_grad_()]
        elif isinstance(v, tuple):
            leaves += [v[0].clone().requires_grad_(), v[1].clone().requires_grad_()]
        else:
            leaves.append(v.clone().requires_grad_())
        spec.append(name)

    def f(x, h0, ts, *ls):
        it = iter(ls)
        kw = {}
        for name in spec:
            v = getattr(p0, name)
            if name == "backbone":
                kw[name] = tuple((next(it), next(it)) for _ in v)
            elif isinstance(v, tuple):
                kw[name] = (next(it), next(it))
            else:
                kw[name] = next(it)
        y, st = K.reference(x, K.CfCState(h0), p0._replace(**kw), timespans=ts)
        return y, st.h

    assert torch.autograd.gradcheck(f, (x, h0, ts, *leaves), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_time_scale_only_enters_through_the_ratio():
    p = random_params(time_scale=1e-3)
    x = torch.randn(4, 2, 3, dtype=D)
    s0 = K.initial_state(x[0], p)
    ts = torch.rand(4, 2, dtype=D) * 3e-3 + 1e-4
    y1, _ = K.reference(x, s0, p, timespans=ts)
    y2, _ = K.reference(x, s0, p._replace(time_scale=2.0, dt=2.0), timespans=ts * 2000)
    assert torch.allclose(y1, y2, atol=1e-13, rtol=0)
    y3, _ = K.reference(x, s0, p, timespans=ts * 5)
    assert not torch.allclose(y1, y3)
    yd, _ = K.reference(x, s0, p)
    yr, _ = K.reference(x, s0, p, timespans=torch.full((4,), p.dt, dtype=D))
    assert torch.equal(yd, yr)


def test_step_equals_sequence_and_op_counts():
    p = random_params()
    x = torch.randn(4, 2, 3, dtype=D)
    st = K.initial_state(x[0], p)
    y, fin = K.reference(x, st, p)
    for t in range(4):
        yt, st = K.step(x[t], st, p)
        assert torch.equal(yt, y[t])
    assert torch.equal(st.h, fin.h)
    c = K.op_counts((4, 2, 3), p)
    # backbone 7 -> 5, four heads 5 -> 4
    assert c["macs"] == 8 * (7 * 5 + 4 * 5 * 4)
