"""Fused CUDA LTC (cuda/ltc.cu + spiking.kernels.cuda_ltc) against the reference loop.

Without a GPU: ltc.cu compiles with NVRTC for sm_80 and sm_90, and the fake (meta) impls of the
custom ops give the right shapes. The comparisons with the reference (outputs, final state and
all gradients for float64/float32/float16/bfloat16, awkward sizes, the workspace and
shared-slice paths) run twice (fixture ``cuda_device``): on a GPU, and under the CPU emulator
of tests/cuda_emu.py (the same .cu source compiled by g++, driven by the same host code).
GPU only: a side stream, opcheck and torch.compile.
"""

from __future__ import annotations

import re

import pytest
import torch
from cuda_emu import needs_gpu
from test_ltc import _run_with_grads, random_params  # tests/kernels is on sys.path

from spiking.kernels import dispatch, nvrtc
from spiking.kernels import ltc as K

CL = pytest.importorskip("spiking.kernels.cuda_ltc")
D = torch.float64
SRC = nvrtc.CUDA_DIR / "ltc.cu"
KERNELS = ("ltc_fwd_f32", "ltc_fwd_f64", "ltc_bwd_f32", "ltc_bwd_f64")


# ---- without a GPU ----------------------------------------------------------------------------

@pytest.mark.parametrize("arch", nvrtc.ARCHS)
def test_nvrtc_compiles_ltc_cu(arch):
    try:
        nvrtc.load()
    except OSError as e:
        pytest.skip(f"libnvrtc not available: {e}")
    r = nvrtc.compile_source(SRC, arch)
    assert r.ok, r.log
    assert "warning" not in r.log.lower(), r.log
    assert r.binary_bytes > 0
    text = SRC.read_text()
    for name in KERNELS:  # every name the loader launches is an extern "C" kernel
        assert re.search(rf'extern "C" __global__ void {name}\(', text), name


def test_registered_and_refuses_cpu_tensors():
    assert "cuda" in dispatch.registered("ltc")
    p = random_params()
    x = torch.randn(3, 2, 3, dtype=D)
    with pytest.raises(dispatch.BackendUnavailable, match="cuda"):
        K.run(x, K.LTCState(torch.zeros(2, 4, dtype=D)), p, backend="cuda")
    with pytest.raises(dispatch.BackendUnavailable, match="CUDA tensors"):
        CL.run(x, K.LTCState(torch.zeros(2, 4, dtype=D)), p)


def test_fake_impls_give_shapes_on_meta():
    t, b, n = 5, 3, 7
    m = lambda *s: torch.empty(*s, device="meta")
    args = (m(b, n), m(t, b), m(t, b, n), m(t, b, n), m(n), m(n, n), m(n, n), m(n, n), m(n, n),
            m(n), m(n))
    traj = CL.ltc_fwd(*args, 1e-8, 3)
    assert traj.shape == (t, b, n) and traj.device.type == "meta"
    grads = CL.ltc_bwd(m(t, b, n), traj, *args, 1e-8, 3)
    assert [tuple(g.shape) for g in grads] == [tuple(a.shape) for a in args]


def _inputs(T, B, n_in, n, k, ts_kind, seed):
    p = random_params(n_in=n_in, n=n, ode_unfolds=k, seed=seed)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(T, B, n_in, generator=g, dtype=D)
    v0 = torch.randn(B, n, generator=g, dtype=D) * 0.3
    ts = {None: None, "t": torch.rand(T, generator=g, dtype=D) * 2e-3 + 1e-4,
          "tb": torch.rand(T, B, generator=g, dtype=D) * 2e-3 + 1e-4}[ts_kind]
    names = [f for f, v in p._asdict().items() if isinstance(v, torch.Tensor)]
    return p, x, v0, ts, names


def _compare(out_r, g_r, out_f, g_f, names, ts, tol):
    for nm, a, b in zip(["y", "final v", "trajectory"], out_r, out_f):
        assert torch.isfinite(b).all(), nm
        err = (a.to(D) - b.to(D)).abs().max() / (1 + a.to(D).abs().max())
        assert err <= tol, (nm, err.item())
    for nm, a, b in zip(["x", "v0"] + (["timespans"] if ts is not None else []) + names,
                        g_r, g_f):
        assert b is not None and torch.isfinite(b).all(), nm
        err = (a.to(D) - b.to(D)).abs().max() / (1 + a.to(D).abs().max())
        assert err <= tol, (nm, err.item())


# ---- on a GPU and under the emulator (fixture cuda_device) ----------------------------------

def _cuda(p, x, v0, ts, dtype=D, param_dtype=None, device="cuda"):
    pd = param_dtype or dtype
    p = p._replace(**{f: v.to(device, pd) for f, v in p._asdict().items()
                      if isinstance(v, torch.Tensor)})
    return p, x.to(device, dtype), v0.to(device, dtype), None if ts is None else ts.to(device,
                                                                                       pd)


# (T, B, N_in, N, K, timespans, patches): N = 300 and N = 70 with 32 threads loop several units
# per thread and pad the reduction; SHARED_LIMIT = 0 takes the global-workspace path; the small
# SYN_GRAD_BYTES makes 2 blocks of 5 share a synapse-gradient slice (atomic adds).
CASES = [(1, 1, 1, 1, 1, None, {}), (6, 3, 2, 33, 3, "tb", {}), (4, 2, 3, 300, 2, "t", {}),
         (3, 5, 4, 19, 6, "tb", {}), (3, 2, 3, 70, 2, "t", {"MAX_THREADS": 32}),
         (4, 3, 2, 9, 3, "tb", {"SHARED_LIMIT": 0}),
         (3, 5, 2, 9, 2, "tb", {"SYN_GRAD_BYTES": 4 * 9 * 9 * 8 * 2})]


@pytest.mark.parametrize("T,B,n_in,n,k,ts_kind,patch", CASES)
def test_cuda_float64_equals_reference(T, B, n_in, n, k, ts_kind, patch, cuda_device,
                                       monkeypatch):
    for attr, val in patch.items():
        monkeypatch.setattr(CL, attr, val)
    p, x, v0, ts, names = _inputs(T, B, n_in, n, k, ts_kind, seed=T + n)
    p, x, v0, ts = _cuda(p, x, v0, ts, device=cuda_device)
    before = dict(CL.CALLS)
    out_r, g_r = _run_with_grads(K.reference, x, v0, ts, p, names)
    out_f, g_f = _run_with_grads(lambda *a, **kw: K.run(*a, backend="cuda", **kw), x, v0, ts,
                                 p, names)
    assert CL.CALLS == {"fwd": before["fwd"] + 1, "bwd": before["bwd"] + 1}
    if cuda_device != "cuda":  # under the emulator, which records every launch: one block each
        import cuda_emu

        fwd, bwd = cuda_emu.LAUNCHES[-2:]
        assert fwd[0].startswith("ltc_fwd_") and bwd[0].startswith("ltc_bwd_")
        assert fwd[1] == bwd[1] == (B,)
    _compare(out_r, g_r, out_f, g_f, names, ts, 1e-10)


@pytest.mark.parametrize("patch", [{"SHARED_LIMIT": 0}, {"SYN_GRAD_BYTES": 4 * 40 * 40 * 8}])
def test_cuda_workspace_and_shared_slices(monkeypatch, patch, cuda_device):
    for attr, val in patch.items():
        monkeypatch.setattr(CL, attr, val)
    p, x, v0, ts, names = _inputs(5, 4, 3, 40, 3, "tb", seed=2)
    p, x, v0, ts = _cuda(p, x, v0, ts, device=cuda_device)
    out_r, g_r = _run_with_grads(K.reference, x, v0, ts, p, names)
    out_f, g_f = _run_with_grads(lambda *a, **kw: CL.run(*a, **kw), x, v0, ts, p, names)
    _compare(out_r, g_r, out_f, g_f, names, ts, 1e-10)


def _ref_in(dtype):
    """The reference on the same inputs, outputs rounded to the input dtype as the fused path
    returns them (float16/bfloat16 are computed in float32 by both)."""
    def f(x, st, p, record, timespans):
        y, fin, tr = K.reference(x, st, p, record=record, timespans=timespans)
        return y.to(dtype), K.LTCState(fin.v.to(dtype)), K.LTCState(tr.v.to(dtype))
    return f


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float16, 2 * 2 ** -10),
                                       (torch.bfloat16, 2 * 2 ** -7)])
def test_cuda_low_precision_inputs(dtype, tol, cuda_device):
    p, x, v0, _, names = _inputs(7, 3, 3, 45, 4, None, seed=5)
    # the reference computes timespans / K in the input dtype: with K = 4 and these timespans
    # both are exact in float16/bfloat16, so only the outputs' rounding differs
    ts = torch.randint(1, 9, (7, 3), generator=torch.Generator().manual_seed(0)) * 2.0 ** -12
    p, x, v0, ts = _cuda(p, x, v0, ts, dtype=dtype, param_dtype=torch.float32,
                         device=cuda_device)
    out_r, g_r = _run_with_grads(_ref_in(dtype), x, v0, ts, p, names)
    out_f, g_f = _run_with_grads(lambda *a, **kw: K.run(*a, backend="cuda", **kw), x, v0, ts,
                                 p, names)
    assert out_f[0].dtype == dtype and out_f[1].dtype == dtype
    _compare(out_r, g_r, out_f, g_f, names, ts, tol)


@needs_gpu
def test_cuda_auto_dispatch_side_stream_and_empty_sequence():
    p, x, v0, ts, _ = _inputs(6, 2, 3, 8, 2, "t", seed=1)
    p, x, v0, ts = _cuda(p, x, v0, ts, dtype=torch.float32)
    y_r, s_r = K.reference(x, K.LTCState(v0), p, timespans=ts)
    n = CL.CALLS["fwd"]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        y_f, s_f = K.run(x, K.LTCState(v0), p, backend="auto", timespans=ts)
    torch.cuda.current_stream().wait_stream(s)
    assert CL.CALLS["fwd"] == n + 1
    assert torch.allclose(y_f, y_r, atol=2e-5, rtol=0)
    assert torch.allclose(s_f.v, s_r.v, atol=2e-5, rtol=0)
    y0, s0 = K.run(x[:0], K.LTCState(v0), p, backend="cuda")
    assert y0.shape == (0, 2, 8) and torch.equal(s0.v, v0)


@needs_gpu
def test_cuda_opcheck_and_torch_compile():
    p, x, v0, ts, names = _inputs(5, 3, 2, 21, 3, "tb", seed=3)
    p, x, v0, ts = _cuda(p, x, v0, ts, dtype=torch.float32)
    t, b, n = 5, 3, 21
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.rand(*s, device="cuda", generator=g)
    args = (v0, r(t, b) * 1e-3 + 1e-4, r(t, b, n), r(t, b, n), p.cm, p.w, p.sigma, p.mu, p.erev,
            p.gleak, p.vleak, 1e-8, 3)
    args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(CL.ltc_fwd, args)

    def f(x, v0, ts, *ps):
        q = p._replace(**dict(zip(names, ps)))
        y, st = CL.run(x, K.LTCState(v0), q, timespans=ts)
        return y.sin().sum() + (st.v ** 2).sum()

    def grads(fn):
        leaves = [a.detach().clone().requires_grad_() for a in (x, v0, ts)]
        ps = [getattr(p, k).detach().clone().requires_grad_() for k in names]
        loss = fn(*leaves, *ps)
        loss.backward()
        return [loss] + [a.grad for a in leaves + ps]

    eager = grads(f)
    n_fwd = CL.CALLS["fwd"]
    compiled = grads(torch.compile(f))
    assert CL.CALLS["fwd"] > n_fwd  # the compiled graph calls the fused kernel
    for a, c in zip(eager, compiled):
        assert torch.allclose(a, c, atol=1e-5, rtol=1e-4)
