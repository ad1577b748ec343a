"""EGRU kernel: golden hand-computed steps, fused (CPU numba / CUDA) vs the reference loop."""

import math

import pytest
import torch

from spiking import surrogate
from spiking.kernels import dispatch
from spiking.kernels import egru as K

CPU_OK = dispatch.backend_status()["cpu"] is None


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_golden_two_steps_by_hand():
    # H = 1, all in float64: weights and inputs chosen so both branches (event / no event) occur
    w = torch.tensor([[0.5], [-1.0], [2.0]], dtype=torch.float64)  # R_u, R_r, R_z
    thr = torch.tensor([0.3], dtype=torch.float64)
    p = K.EGRUParams(w, thr)
    wx = torch.tensor([[[1.0, 0.0, 2.0]], [[0.2, 0.4, -0.5]]], dtype=torch.float64)
    y, st, tr = K.reference(wx, K.initial_state(wx[0], p), p, record=True)
    # step 0: y[-1] = c[-1] = 0
    u0, z0 = sig(1.0), math.tanh(2.0)
    c0 = u0 * z0                       # 0.731 * 0.964 = 0.705 > 0.3 -> event
    assert tr.c[0, 0, 0].item() == pytest.approx(c0, abs=1e-15)
    assert y[0, 0, 0].item() == pytest.approx(c0, abs=1e-15)
    # step 1: recurrent input is the event y0 = c0; reset subtracts it
    u1 = sig(0.2 + 0.5 * c0)
    r1 = sig(0.4 - 1.0 * c0)
    z1 = math.tanh(-0.5 + 2.0 * r1 * c0)
    c1 = u1 * z1 + (1 - u1) * c0 - c0
    assert tr.c[1, 0, 0].item() == pytest.approx(c1, abs=1e-15)
    assert y[1, 0, 0].item() == (c1 if c1 > 0.3 else 0.0)
    assert y[1, 0, 0].item() == 0.0 and c1 < 0.3  # no event at step 1 for these numbers
    assert st.c.item() == pytest.approx(c1, abs=1e-15) and st.y.item() == 0.0


def test_threshold_pseudo_derivative_golden():
    # dy/dtheta = -c * gamma * g(c - theta) with the triangle g(x) = a max(0, 1 - a|x|)
    w = torch.zeros(3, 1, dtype=torch.float64)
    thr = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    p = K.EGRUParams(w, thr)
    wx = torch.tensor([[[10.0, 0.0, 0.6]]], dtype=torch.float64)  # u ~ 1, z = tanh(0.6)
    y, _ = K.reference(wx, K.initial_state(wx[0], p), p)
    y.sum().backward()
    c = sig(10.0) * math.tanh(0.6)
    a = K.TRIANGLE_ALPHA
    expect = -c * K.DAMPENING * a * max(0.0, 1 - a * abs(c - 0.5))
    assert thr.grad.item() == pytest.approx(expect, rel=1e-12)


def _case(t, b, h, activity_theta, dtype, seed, y0_density=0.3):
    g = torch.Generator().manual_seed(seed)
    wx = torch.randn(t, b, 3 * h, generator=g, dtype=dtype) * 1.5
    w = torch.randn(3 * h, h, generator=g, dtype=dtype) / max(h, 1) ** 0.5
    thr = activity_theta + 0.1 * torch.rand(h, generator=g, dtype=dtype)
    c0 = torch.randn(b, h, generator=g, dtype=dtype) * 0.5
    y0 = c0 * (torch.rand(b, h, generator=g, dtype=dtype) < y0_density)
    return [v.requires_grad_() for v in (wx, w, thr, c0, y0)]


def _run(backend, wx, w, thr, c0, y0, sur):
    p = K.EGRUParams(w, thr, sur)
    y, st, tr = K.run(wx, K.EGRUState(c0, y0), p, backend=backend, record=True)
    g = torch.Generator().manual_seed(7)
    loss = ((y * torch.randn(y.shape, generator=g, dtype=y.dtype).to(y.device)).sum()
            + (st.c ** 2).sum() + 0.5 * st.y.sum() + 0.3 * tr.c.sum())
    grads = torch.autograd.grad(loss, [wx, w, thr, c0, y0])
    return [y, st.c, st.y, tr.c, *grads]


NAMES = ["y", "c_T", "y_T", "c_traj", "d_wx", "d_weight_hh", "d_threshold", "d_c0", "d_y0"]


def _compare(backend, shape, theta, dtype, sur, seed=0):
    args = _case(*shape, theta, dtype, seed)
    ref = _run("reference", *args, sur)
    out = _run(backend, *args, sur)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for name, a, b in zip(NAMES, ref, out):
        assert torch.isfinite(b).all(), name
        torch.testing.assert_close(b, a, rtol=tol, atol=tol, msg=f"{name} differs")
    return (ref[0] != 0).float().mean().item()


SHAPES = [(1, 1, 1), (1, 3, 5), (9, 4, 13), (17, 5, 33), (6, 2, 70)]


@pytest.mark.skipif(not CPU_OK, reason="numba is not available")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("theta", [-0.2, 0.2, 0.6, 5.0])  # activity from ~all to none
def test_cpu_fused_matches_reference(shape, theta, dtype):
    from spiking.kernels.cpu import egru as C

    before = dict(C.CALLS)
    _compare("cpu", shape, theta, dtype, K.EGRUParams.__new__.__defaults__[0])
    assert C.CALLS["fwd"] > before["fwd"] and C.CALLS["bwd"] > before["bwd"]  # fused path ran


@pytest.mark.skipif(not CPU_OK, reason="numba is not available")
def test_cpu_activity_levels_cover_sparse_and_dense():
    acts = [_compare("cpu", (12, 4, 40), th, torch.float64, K.EGRUParams.__new__.__defaults__[0])
            for th in (-0.5, 0.3, 0.7)]
    assert acts[0] > 0.4 and 0.0 < acts[2] < 0.15  # the sweep really spans activity levels


@pytest.mark.skipif(not CPU_OK, reason="numba is not available")
@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_backward_blocks_of_four_samples(threads):
    """The backward takes a thread's samples four per pass (support dot products, dR events);
    13 samples in one or two chunks exercise full passes and every remainder length."""
    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"numba has {numba.config.NUMBA_NUM_THREADS} thread(s)")
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        for theta in (-0.2, 0.3, 0.7):
            _compare("cpu", (9, 13, 37), theta, torch.float64, K.EGRUParams.__new__.__defaults__[0])
    finally:
        numba.set_num_threads(old)


@pytest.mark.skipif(not CPU_OK, reason="numba is not available")
@pytest.mark.parametrize("name", ["atan", "fast_sigmoid", "sigmoid", "straight_through"])
def test_cpu_other_surrogates(name):
    _compare("cpu", (7, 3, 11), 0.3, torch.float64, surrogate.get(name))


@pytest.mark.skipif(not CPU_OK, reason="numba is not available")
def test_cpu_vectorised_float32_sigmoid_accuracy():
    """The float32 forward's polynomial-exp sigmoid against float64 torch.sigmoid, over the
    whole range (clamped tails, underflow side, both signs)."""
    import numpy as np

    from spiking.kernels.cpu import egru as C

    x = torch.cat([torch.linspace(-120, 120, 4001), torch.randn(3000) * 8,
                   torch.tensor([0.0, -0.0, 87.0, -87.0, 88.5, -88.5, 1e-8, -1e-8])]).float()
    n = x.numel()
    out = np.empty(n, np.float32)
    C._sigmoid_rows(x.numpy(), n, out, np.empty(n, np.float32), np.empty(n, np.int32))
    want = torch.sigmoid(x.double())
    got = torch.from_numpy(out).double()
    assert (got - want).abs().max() < 1.2e-7
    normal = want > 1e-30
    rel = ((got - want).abs() / want)[normal].max()
    print(f"max relative error {rel:.2e}")
    assert rel < 4 * 2.0 ** -24 * 2  # a few float32 ulps


@pytest.mark.skipif(not CPU_OK, reason="numba is not available")
def test_cpu_outputs_fully_written_and_zero_length():
    from spiking.kernels.cpu import egru as C

    args = [a.detach() for a in _case(4, 2, 9, 0.3, torch.float32, 3)]
    p = K.EGRUParams(args[1], args[2])
    y, st = C.run(args[0], K.EGRUState(args[3], args[4]), p)
    assert torch.isfinite(y).all() and torch.isfinite(st.c).all()  # NaN-prefilled buffers
    y0, st0 = K.run(args[0][:0], K.EGRUState(args[3], args[4]), p, backend="cpu")
    assert y0.shape == (0, 2, 9) and torch.equal(st0.c, args[3])


def test_validation_errors():
    p = K.EGRUParams(torch.zeros(12, 4), torch.zeros(4))
    with pytest.raises(ValueError, match=r"wx must be \[T, B, 3H\]"):
        K.run(torch.zeros(2, 1, 5), None, p)
    with pytest.raises(ValueError, match="weight_hh must be"):
        K.run(torch.zeros(2, 1, 12), None, K.EGRUParams(torch.zeros(4, 4), torch.zeros(4)))
    with pytest.raises(ValueError, match="state.c has shape"):
        K.run(torch.zeros(2, 1, 12), K.EGRUState(torch.zeros(2, 4), torch.zeros(1, 4)), p)
    with pytest.raises(dispatch.BackendUnavailable):
        K.run(torch.zeros(2, 1, 12), None, p, backend="cuda")


def test_op_counts_dense_vs_event():
    c = K.op_counts((10, 2, 8), 5, events=7, input_events=3, backward_units=11)
    assert c["recurrent_macs_dense"] == 10 * 2 * 3 * 8 * 8
    assert c["recurrent_macs_event"] == 3 * 8 * 7
    assert c["input_macs_dense"] == 10 * 2 * 3 * 8 * 5 and c["input_macs_event"] == 3 * 8 * 3
    assert c["backward_recurrent_macs_event"] == 3 * 8 * 11


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape,theta", [(s, 0.3) for s in SHAPES]
                         + [((5, 3, 1100), 0.3), ((9, 4, 13), -0.2), ((9, 4, 13), 5.0)])
def test_cuda_fused_matches_reference(shape, theta, dtype, cuda_device):
    """On a GPU and under the CPU emulator of the .cu kernel (fixture cuda_device)."""
    from spiking.kernels import cuda_egru

    args = _case(*shape, theta, dtype, 1)
    args = [a.detach().to(cuda_device).requires_grad_() for a in args]
    sur = K.EGRUParams.__new__.__defaults__[0]
    before = dict(cuda_egru.CALLS)
    ref = _run("reference", *args, sur)
    out = _run("cuda", *args, sur)
    assert cuda_egru.CALLS["fwd"] > before["fwd"] and cuda_egru.CALLS["bwd"] > before["bwd"]
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for name, a, b in zip(NAMES, ref, out):
        assert torch.isfinite(b).all(), name
        torch.testing.assert_close(b, a, rtol=tol, atol=tol, msg=f"{name} differs")


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_source_compiles_with_nvrtc(arch):
    nv = pytest.importorskip("spiking.kernels.nvrtc")
    if nv.find_libnvrtc() is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc)")
    r = nv.compile_source(nv.CUDA_DIR / "egru.cu", arch)
    assert r.ok, r.log
    assert r.binary_bytes > 0
