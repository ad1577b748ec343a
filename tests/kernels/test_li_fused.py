"""Fused CPU (numba) LI kernels against the reference loop (spiking/kernels/li.py).

Outputs, final state, trajectory and every gradient (input, initial state, alpha_mem,
alpha_syn, gain, v_leak) are compared on NaN-prefilled kernel buffers, with a call counter.
"""

import pytest
import torch
from fused_helpers import assert_close, run_and_grad

import spiking
from spiking.kernels import fused
from spiking.kernels import li as K
from spiking.kernels.dispatch import BackendUnavailable

pytest.importorskip("numba", reason="numba is not installed: the fused CPU backend needs it")
from spiking.kernels.cpu import li as CPU


@pytest.fixture(autouse=True)
def nan_prefill(monkeypatch):
    monkeypatch.setattr(fused, "PREFILL", float("nan"))


def make_case(syn, per_neuron, dtype, shape=(31, 3, 300), seed=0):
    g = torch.Generator().manual_seed(seed)
    pshape = (shape[-1],) if per_neuron else ()

    def rnd(lo, hi, s=pshape):
        return (lo + (hi - lo) * torch.rand(s, generator=g, dtype=torch.float64)).to(
            dtype).requires_grad_()
    p = K.LIParams(alpha_mem=rnd(0.7, 0.95), alpha_syn=rnd(0.5, 0.9) if syn else None,
                   gain=rnd(0.8, 1.2), v_leak=rnd(-0.1, 0.1))
    x = rnd(-0.5, 1.0, shape)
    state = K.LIState(rnd(-0.5, 0.5, shape[1:]), rnd(-0.3, 0.3, shape[1:]) if syn else None)
    leaves = [x, *[s for s in state if s is not None],
              *[v for v in p if isinstance(v, torch.Tensor)]]
    return x, state, p, leaves


def compare(x, state, p, leaves, dtype, record=True):
    calls = dict(CPU.CALLS)
    ref = run_and_grad(lambda *a: K.run(*a[:3], backend="reference", record=a[3]), x, state, p,
                       leaves, record)
    got = run_and_grad(lambda *a: K.run(*a[:3], backend="cpu", record=a[3]), x, state, p,
                       leaves, record)
    assert CPU.CALLS["fwd"] == calls["fwd"] + 1 and CPU.CALLS["bwd"] == calls["bwd"] + 1, \
        "the fused CPU kernels did not run"
    assert_close("out", got[0], ref[0], dtype, exact=True)
    for f in K.LIState._fields:
        assert_close(f"final.{f}", getattr(got[1], f), getattr(ref[1], f), dtype, exact=True)
        if record:
            assert_close(f"traj.{f}", getattr(got[2], f), getattr(ref[2], f), dtype, exact=True)
    for k, (a, b) in enumerate(zip(got[3], ref[3])):
        assert_close(f"grad[{k}]", a, b, dtype)


@pytest.mark.parametrize("syn", [False, True])
@pytest.mark.parametrize("per_neuron", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_li_matches_reference(syn, per_neuron, dtype):
    compare(*make_case(syn, per_neuron, dtype), dtype)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1000, 1, 3), (4, 3, 257)])
def test_awkward_sizes(shape):
    compare(*make_case(True, True, torch.float64, shape=shape), torch.float64, record=False)


@pytest.mark.parametrize("kw", [{"normalize_input": True}, {"tau_syn": 4e-3}])
def test_module_learnable_tau(kw):
    m = spiking.LI(learn_tau=True, n_neurons=21, backend="reference", **kw).double()
    x = (torch.rand(50, 2, 21, dtype=torch.float64) - 0.3).requires_grad_()
    res = {}
    for backend in ("reference", "cpu"):
        m.backend = backend
        m.zero_grad()
        x.grad = None
        out, st = m(x)
        (out.pow(2).sum() + st.v.sum()).backward()
        res[backend] = [out, st.v, x.grad, *[q.grad for q in m.parameters()]]
    for k, (a, b) in enumerate(zip(res["cpu"], res["reference"])):
        assert_close(f"module[{k}]", a, b, torch.float64)


def test_cuda_backend_on_cpu_tensors_raises():
    with pytest.raises(BackendUnavailable, match="cuda"):
        spiking.LI(backend="cuda")(torch.rand(3, 2, 4))


def test_opcheck_and_compile():
    x, state, p, _ = make_case(True, True, torch.float32, shape=(5, 2, 30))
    params = [fused.pack(getattr(p, n), n, (2, 30), torch.float32, "cpu").detach()
              .requires_grad_() for n in fused.LI_PARAMS]
    torch.library.opcheck(fused.li_fwd, (x.detach().reshape(5, 60).requires_grad_(),
                                         state.v.detach().reshape(60),
                                         state.i.detach().reshape(60), params, [1, 0], True))

    def f(x):
        out, final = CPU.run(x, state, p)
        return out.pow(2).sum() + final.i.sum()
    eager = torch.autograd.grad(f(x), x)[0]
    compiled = torch.autograd.grad(torch.compile(f, backend="aot_eager", fullgraph=True)(x), x)[0]
    assert_close("compiled grad x", compiled, eager, torch.float32)
