"""LTC kernel: golden trace, an independent loop oracle, ncps' LTCCell, gradients, semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spiking.kernels import ltc as K

D = torch.float64


def golden_params(**kw):
    t = lambda v: torch.tensor([[v]], dtype=D)
    u = lambda v: torch.tensor([v], dtype=D)
    base = {"sensory_w": t(0.8), "sensory_sigma": t(4.0), "sensory_mu": t(0.5),
            "sensory_erev": t(1.0), "w": t(0.3), "sigma": t(5.0), "mu": t(0.3),
            "erev": t(-1.0), "cm": u(1.0), "gleak": u(0.5), "vleak": u(0.2), "dt": 0.5,
            "ode_unfolds": 2, "eps": 1e-8, "input_w": u(2.0), "input_b": u(-0.5),
            "output_w": u(3.0), "output_b": u(0.1)}
    base.update(kw)
    return K.LTCParams(**base)


# Hand computation (Python floats, math module), N_in = N = 1, K = 2, D = 0.5 s, v0 = 0:
# step 1: u = 2*1 - 0.5 = 1.5; a_s = 0.8*sigmoid(4*(1.5-0.5)) = 0.785611; c = 1/(0.5/2) = 4
#   unfold 1: a = 0.3*sigmoid(5*(0-0.3)) = 0.0547277
#             v = (0 + 0.5*0.2 - 0.0547277 + 0.785611) / (4 + 0.5 + 0.0547277 + 0.785611 + 1e-8)
#               = 0.830883 / 5.340339 = 0.155586
#   unfold 2: a = 0.3*sigmoid(5*(0.155586-0.3)), same formula -> v = 0.261879; y = 3v + 0.1
GOLDEN_V = [0.2618787886617907, 0.189091140838866, 0.25721895393058797]
GOLDEN_Y = [0.8856363659853721, 0.6672734225165979, 0.8716568617917638]
# same inputs, timespans (0.5, 0.1, 2.0) s
GOLDEN_V_IRR = [0.2618787886617907, 0.24381983506145063, 0.31780633026428856]


def test_golden_trace():
    x = torch.tensor([1.0, 0.0, 0.5], dtype=D).reshape(3, 1, 1)
    p = golden_params()
    y, st, traj = K.reference(x, K.LTCState(torch.zeros(1, 1, dtype=D)), p, record=True)
    assert torch.allclose(traj.v.flatten(), torch.tensor(GOLDEN_V, dtype=D), atol=1e-12)
    assert torch.allclose(y.flatten(), torch.tensor(GOLDEN_Y, dtype=D), atol=1e-12)
    assert st.v.item() == pytest.approx(GOLDEN_V[-1], abs=1e-12)


def test_golden_irregular_timespans():
    x = torch.tensor([1.0, 0.0, 0.5], dtype=D).reshape(3, 1, 1)
    ts = torch.tensor([0.5, 0.1, 2.0], dtype=D)
    _, _, traj = K.reference(x, K.LTCState(torch.zeros(1, 1, dtype=D)), golden_params(),
                             record=True, timespans=ts)
    assert torch.allclose(traj.v.flatten(), torch.tensor(GOLDEN_V_IRR, dtype=D), atol=1e-12)


def random_params(n_in=3, n=4, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, lo=0.0, hi=1.0: torch.rand(*s, generator=g, dtype=D) * (hi - lo) + lo
    base = {"sensory_w": r(n_in, n, lo=0.01), "sensory_sigma": r(n_in, n, lo=3, hi=8),
            "sensory_mu": r(n_in, n, lo=0.3, hi=0.8), "sensory_erev": r(n_in, n, lo=-1, hi=1),
            "w": r(n, n, lo=0.01), "sigma": r(n, n, lo=3, hi=8), "mu": r(n, n, lo=0.3, hi=0.8),
            "erev": r(n, n, lo=-1, hi=1), "cm": r(n, lo=0.4, hi=0.6) * 1e-3,
            "gleak": r(n, lo=0.01), "vleak": r(n, lo=-0.2, hi=0.2), "dt": 1e-3,
            "ode_unfolds": 3, "input_w": r(n_in, lo=0.5), "input_b": r(n_in, lo=-0.5, hi=0.5),
            "output_w": r(n, lo=0.5, hi=2), "output_b": r(n, lo=-0.5, hi=0.5)}
    base.update(kw)
    return K.LTCParams(**base)


def loop_oracle(x, v0, p, ts):
    """Independent scalar implementation (numpy, explicit loops over units and synapses)."""
    P = {k: (v.detach().numpy() if isinstance(v, torch.Tensor) else v) for k, v in
         p._asdict().items()}
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))
    T, B, n_in = x.shape
    n = P["cm"].shape[0]
    v = v0.numpy().copy()
    out = np.zeros((T, B, n))
    for t in range(T):
        for b in range(B):
            u = [x[t, b, j].item() * P["input_w"][j] + P["input_b"][j] for j in range(n_in)]
            c = [P["cm"][i] * p.ode_unfolds / ts[t, b] for i in range(n)]
            for _ in range(p.ode_unfolds):
                new = np.zeros(n)
                for i in range(n):
                    num = c[i] * v[b, i] + P["gleak"][i] * P["vleak"][i]
                    den = c[i] + P["gleak"][i]
                    for j in range(n_in):
                        a = P["sensory_w"][j, i] * sig(
                            P["sensory_sigma"][j, i] * (u[j] - P["sensory_mu"][j, i]))
                        num += a * P["sensory_erev"][j, i]
                        den += a
                    for j in range(n):
                        a = P["w"][j, i] * sig(P["sigma"][j, i] * (v[b, j] - P["mu"][j, i]))
                        num += a * P["erev"][j, i]
                        den += a
                    new[i] = num / (den + p.eps)
                v[b] = new
            out[t, b] = v[b] * P["output_w"] + P["output_b"]
    return out, v


def test_matches_independent_loop_with_irregular_timespans():
    p = random_params()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, 3, generator=g, dtype=D)
    v0 = torch.randn(2, 4, generator=g, dtype=D) * 0.3
    ts = torch.rand(5, 2, generator=g, dtype=D) * 2e-3 + 1e-4
    y, st = K.reference(x, K.LTCState(v0), p, timespans=ts)
    y_ref, v_ref = loop_oracle(x, v0, p, ts.numpy())
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(st.v.numpy(), v_ref, rtol=0, atol=1e-12)


def test_timespans_equal_dt_is_default_and_1d_broadcasts():
    p = random_params()
    x = torch.randn(4, 3, 3, dtype=D)
    v0 = K.initial_state(x[0], p)
    y0, s0 = K.reference(x, v0, p)
    y1, _s1 = K.reference(x, v0, p, timespans=torch.full((4, 3), p.dt, dtype=D))
    y2, s2 = K.reference(x, v0, p, timespans=torch.full((4,), p.dt, dtype=D))
    assert torch.equal(y0, y1) and torch.equal(y0, y2) and torch.equal(s0.v, s2.v)
    # a different elapsed time must change the result
    y3, _ = K.reference(x, v0, p, timespans=torch.full((4,), 3 * p.dt, dtype=D))
    assert not torch.allclose(y0, y3)


def test_leak_only_is_implicit_euler_in_seconds():
    """No synapses: each unfold is implicit Euler of cm dv/dt = gleak (vleak - v), tau in s."""
    n = 3
    p = random_params(n_in=1, n=n, sensory_w=torch.zeros(1, n, dtype=D),
                      w=torch.zeros(n, n, dtype=D), eps=0.0, ode_unfolds=400,
                      cm=torch.tensor([2e-3, 5e-3, 1e-2], dtype=D),
                      gleak=torch.tensor([1.0, 0.5, 2.0], dtype=D),
                      vleak=torch.tensor([0.1, -0.2, 0.0], dtype=D), input_w=None, input_b=None,
                      output_w=None, output_b=None)
    tau = p.cm / p.gleak                   # 2 ms, 10 ms, 5 ms
    v0 = torch.tensor([[1.0, 0.5, -1.0]], dtype=D)
    delta = 4e-3
    _, st = K.reference(torch.zeros(1, 1, 1, dtype=D), K.LTCState(v0), p,
                        timespans=torch.tensor([delta], dtype=D))
    implicit = p.vleak + (v0 - p.vleak) * (1 + delta / (400 * tau)) ** -400
    # 400 sequential float64 updates: rounding ~ 400 * 2.2e-16
    assert torch.allclose(st.v, implicit, atol=1e-13, rtol=0)
    # and it approaches the exact exponential decay with tau = cm / gleak seconds
    exact = p.vleak + (v0 - p.vleak) * torch.exp(-delta / tau)
    assert torch.allclose(st.v, exact, atol=1e-3, rtol=0)
    assert not torch.allclose(st.v, p.vleak + (v0 - p.vleak) * torch.exp(-delta / (2 * tau)),
                              atol=1e-3, rtol=0)




def _ncps_cell(n_in, wiring_seed):
    ncps = pytest.importorskip("ncps")
    from ncps.torch import LTCCell
    wiring = ncps.wirings.AutoNCP(7, 2, seed=wiring_seed)
    torch.manual_seed(wiring_seed)
    cell = LTCCell(wiring, in_features=n_in).double()
    return cell


def test_matches_ncps_ltccell_with_sparse_wiring():
    cell = _ncps_cell(3, 5)
    P = {k: v.detach() for k, v in cell._params.items()}
    with torch.no_grad():  # move input/output maps away from identity
        P["input_w"].uniform_(0.5, 1.5), P["input_b"].uniform_(-0.3, 0.3)
        P["output_w"].uniform_(0.5, 1.5), P["output_b"].uniform_(-0.3, 0.3)
    p = K.LTCParams(
        sensory_w=P["sensory_w"] * P["sensory_sparsity_mask"], sensory_sigma=P["sensory_sigma"],
        sensory_mu=P["sensory_mu"], sensory_erev=P["sensory_erev"],
        w=P["w"] * P["sparsity_mask"], sigma=P["sigma"], mu=P["mu"], erev=P["erev"], cm=P["cm"],
        gleak=P["gleak"], vleak=P["vleak"], dt=1.0, ode_unfolds=cell._ode_unfolds,
        eps=cell._epsilon, input_w=P["input_w"], input_b=P["input_b"], output_w=P["output_w"],
        output_b=P["output_b"], out_features=cell.motor_size)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, 3, generator=g, dtype=D)
    ts = torch.rand(6, generator=g, dtype=D) * 2 + 0.2
    h = torch.zeros(4, 7, dtype=D)
    ys = []
    with torch.no_grad():
        for t in range(6):
            yt, h = cell(x[t], h, elapsed_time=ts[t])
            ys.append(yt)
        y, st = K.reference(x, K.LTCState(torch.zeros(4, 7, dtype=D)), p, timespans=ts)
    assert y.shape == (6, 4, 2)
    assert torch.allclose(y, torch.stack(ys), atol=1e-9, rtol=0)
    assert torch.allclose(st.v, h, atol=1e-9, rtol=0)


def test_gradcheck_all_inputs_params_and_state():
    # time unit 1 s here so that finite differences of cm and timespans are well conditioned
    p0 = random_params(n_in=2, n=3, ode_unfolds=2, dt=1.0,
                       cm=torch.tensor([0.4, 0.5, 0.6], dtype=D))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 2, 2, generator=g, dtype=D).requires_grad_()
    v0 = (torch.randn(2, 3, generator=g, dtype=D) * 0.3).requires_grad_()
    ts = (torch.rand(3, 2, generator=g, dtype=D) + 0.5).requires_grad_()
    names = [k for k, v in p0._asdict().items() if isinstance(v, torch.Tensor)]
    tensors = [getattr(p0, k).clone().requires_grad_() for k in names]

    def f(x, v0, ts, *ps):
        p = p0._replace(**dict(zip(names, ps)))
        y, st = K.reference(x, K.LTCState(v0), p, timespans=ts)
        return y, st.v

    assert torch.autograd.gradcheck(f, (x, v0, ts, *tensors), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_step_equals_sequence_and_empty_sequence():
    p = random_params()
    x = torch.randn(4, 2, 3, dtype=D)
    st = K.initial_state(x[0], p)
    y, fin = K.reference(x, st, p)
    for t in range(4):
        yt, st = K.step(x[t], st, p)
        assert torch.equal(yt, y[t])
    assert torch.equal(st.v, fin.v)
    y0, s0, tr = K.reference(x[:0], fin, p, record=True)
    assert y0.shape == (0, 2, 4) and tr.v.shape == (0, 2, 4) and torch.equal(s0.v, fin.v)


def test_op_counts_scale_with_unfolds():
    p = random_params(n_in=3, n=4, ode_unfolds=2)
    c = K.op_counts((5, 2, 3), p)
    assert c["activations"] == 10 * (3 * 4 + 2 * 4 * 4)
    assert c["membrane_updates"] == 10 * 4 * 2
    c3 = K.op_counts((5, 2, 3), p._replace(ode_unfolds=3))
    assert c3["synaptic_ops"] - c["synaptic_ops"] == 10 * 7 * 16


# ---- fused CPU path (numba) vs the reference: outputs, final state, every gradient

FUSED_CASES = [(1, 1, 1, 1, 1, None), (5, 3, 2, 4, 3, "tb"), (4, 2, 3, 7, 2, "t"),
               (3, 4, 1, 5, 6, "tb")]


def _run_with_grads(fn, x, v0, ts, p, names):
    leaves = [getattr(p, k).clone().requires_grad_() for k in names]
    xx, vv = x.clone().requires_grad_(), v0.clone().requires_grad_()
    tt = None if ts is None else ts.clone().requires_grad_()
    y, st, tr = fn(xx, K.LTCState(vv), p._replace(**dict(zip(names, leaves))), record=True,
                   timespans=tt)
    (y.sin().sum() + (st.v ** 2).sum() + tr.v.cos().sum()).backward()
    grads = [xx.grad, vv.grad] + ([] if tt is None else [tt.grad]) + [a.grad for a in leaves]
    return [y, st.v, tr.v], grads


@pytest.mark.parametrize("T,B,n_in,n,k,ts_kind", FUSED_CASES)
def test_fused_cpu_equals_reference_outputs_state_and_gradients(T, B, n_in, n, k, ts_kind):
    cpu = pytest.importorskip("spiking.kernels.cpu.ltc")
    p = random_params(n_in=n_in, n=n, ode_unfolds=k, seed=T + n)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(T, B, n_in, generator=g, dtype=D)
    v0 = torch.randn(B, n, generator=g, dtype=D) * 0.3
    ts = {None: None, "t": torch.rand(T, generator=g, dtype=D) * 2e-3 + 1e-4,
          "tb": torch.rand(T, B, generator=g, dtype=D) * 2e-3 + 1e-4}[ts_kind]
    names = [f for f, v in p._asdict().items() if isinstance(v, torch.Tensor)]
    before = dict(cpu.CALLS)
    out_r, g_r = _run_with_grads(K.reference, x, v0, ts, p, names)
    out_f, g_f = _run_with_grads(lambda *a, **kw: K.run(*a, backend="cpu", **kw), x, v0, ts, p,
                                 names)
    assert cpu.CALLS["fwd"] == before["fwd"] + 1 and cpu.CALLS["bwd"] == before["bwd"] + 1
    for a, b in zip(out_r, out_f):
        assert torch.isfinite(b).all()
        assert (a - b).abs().max() <= 1e-10
    for name, a, b in zip(["x", "v0"] + (["timespans"] if ts is not None else []) + names,
                          g_r, g_f):
        assert b is not None and (a - b).abs().max() <= 1e-10, name


def test_fused_cpu_float32_auto_and_empty_sequence():
    cpu = pytest.importorskip("spiking.kernels.cpu.ltc")
    p = random_params()
    p32 = p._replace(**{f: v.float() for f, v in p._asdict().items()
                        if isinstance(v, torch.Tensor)})
    x = torch.randn(6, 2, 3)
    st = K.LTCState(torch.zeros(2, 4))
    y_r, s_r = K.reference(x, st, p32)
    n = cpu.CALLS["fwd"]
    y_f, s_f = K.run(x, st, p32, backend="auto")
    assert cpu.CALLS["fwd"] == n + 1 and y_f.dtype == torch.float32
    assert torch.allclose(y_r, y_f, atol=1e-5, rtol=0)
    assert torch.allclose(s_r.v, s_f.v, atol=1e-5, rtol=0)
    y0, s0 = K.run(x[:0], st, p32, backend="cpu")
    assert y0.shape == (0, 2, 4) and torch.equal(s0.v, st.v)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_cpu_vectorised_sigmoid_is_within_an_ulp_or_so(dtype):
    """The CPU kernel's own exp (plain arithmetic, so that it vectorises) against exp in long
    double: at most 2 epsilon relative wherever the sigmoid is a normal number (torch's is
    within 1.1 here), a denormal-sized absolute error below that, and NaN, +-inf kept."""
    cpu = pytest.importorskip("spiking.kernels.cpu.ltc")
    g = np.random.default_rng(0)
    z = np.concatenate([g.standard_normal(50_000) * 10, g.uniform(-800, 800, 5_000),
                        [0.0, -0.0, 1e-300, 708.9, -707.9, 88.0, -87.0]]).astype(dtype)
    sg = np.empty_like(z)
    bits = np.empty(z.shape, dtype=np.int64 if dtype == np.float64 else np.int32)
    f = cpu._sigmoid_into64 if dtype == np.float64 else cpu._sigmoid_into32
    f(z, sg, bits, bits.view(dtype))
    exact = 1 / (1 + np.exp(z.astype(np.longdouble)))
    fi = np.finfo(dtype)
    normal = exact > fi.tiny * 2 ** 10
    rel = np.abs(sg[normal] - exact[normal]) / exact[normal]
    assert rel.max() <= 2 * fi.eps, (rel.max() / fi.eps, z[normal][rel.argmax()])
    assert np.abs(sg[~normal] - exact[~normal]).max() <= fi.tiny * 2 ** 11
    special = np.array([np.nan, np.inf, -np.inf], dtype=dtype)
    out = np.empty_like(special)
    f(special, out, bits[:3], bits[:3].view(dtype))
    assert np.isnan(out[0]) and out[1] <= fi.tiny and out[2] == 1.0


def test_fused_cpu_float32_gradients_against_float64():
    """float32 with N = 37 (the vectorised loops' remainders): the fused kernel's outputs and
    gradients are no further from the float64 result than the float32 reference's are."""
    cpu = pytest.importorskip("spiking.kernels.cpu.ltc")
    p = random_params(n_in=5, n=37, ode_unfolds=4, seed=3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, 5, generator=g, dtype=D)
    v0 = torch.randn(3, 37, generator=g, dtype=D) * 0.3
    names = [f for f, v in p._asdict().items() if isinstance(v, torch.Tensor)]
    p32 = p._replace(**{f: getattr(p, f).float() for f in names})
    out64, g64 = _run_with_grads(K.reference, x, v0, None, p, names)
    out_r, g_r = _run_with_grads(K.reference, x.float(), v0.float(), None, p32, names)
    before = cpu.CALLS["bwd"]
    out_f, g_f = _run_with_grads(lambda *a, **kw: K.run(*a, backend="cpu", **kw), x.float(),
                                 v0.float(), None, p32, names)
    assert cpu.CALLS["bwd"] == before + 1
    for name, t, r, f in zip(["y", "v", "traj", "x", "v0", *names], [*out64, *g64],
                             [*out_r, *g_r], [*out_f, *g_f]):
        scale = max(1.0, t.abs().max().item())
        err_f = (f.double() - t).abs().max().item()
        err_r = (r.double() - t).abs().max().item()
        assert err_f <= max(2 * err_r, 1e-6 * scale), (name, err_f, err_r)
