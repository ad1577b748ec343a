"""Fused CUDA (CuPy) LIF-family and LI kernels against the reference.

Each test runs twice (fixture ``cuda_device``, tests/conftest.py): on a GPU through CuPy
(skipped without one) and under the CPU emulator of tests/cuda_emu.py, which compiles the same
``.cu`` sources with g++ and runs them through the same wrappers on CPU tensors.
float32/float64 forward results must be bitwise equal (the kernels are compiled with
--fmad=false, the emulator with -ffp-contract=off); float16/bfloat16 are computed in float32
exactly as the reference's float32 upcast, then rounded once.
"""

import pytest
import torch
from cuda_emu import needs_gpu
from fused_helpers import TOL, assert_close, assert_time_summed_loss_grads, run_and_grad
from test_li_fused import make_case as make_li
from test_lif_fused import KINDS, make_case

from spiking.kernels import cuda_lif as CU
from spiking.kernels import fused
from spiking.kernels import li as KLI
from spiking.kernels import lif as K

TOL.setdefault(torch.float16, 1e-2)
TOL.setdefault(torch.bfloat16, 1e-2)


@pytest.fixture(autouse=True)
def nan_prefill(monkeypatch):
    monkeypatch.setattr(fused, "PREFILL", float("nan"))


def to_cuda(x, state, p, dtype, device="cuda"):
    def mv(t):
        if not isinstance(t, torch.Tensor):
            return t
        d = dtype if t is x or any(t is s for s in state) else (
            torch.float64 if dtype == torch.float64 else torch.float32)
        return t.detach().to(device, d).requires_grad_()
    xs, ss = mv(x), type(state)(*[mv(s) for s in state])
    ps = type(p)(*[mv(v) for v in p])
    leaves = [xs, *[s for s in ss if s is not None], *[v for v in ps
                                                       if isinstance(v, torch.Tensor)]]
    return xs, ss, ps, leaves


def compare(kernel, x, state, p, leaves, dtype):
    calls = dict(CU.CALLS)
    ref = run_and_grad(lambda *a: kernel.run(*a[:3], backend="reference", record=a[3]),
                       x, state, p, leaves)
    got = run_and_grad(lambda *a: kernel.run(*a[:3], backend="cuda", record=a[3]),
                       x, state, p, leaves)
    assert CU.CALLS["fwd"] == calls["fwd"] + 1 and CU.CALLS["bwd"] == calls["bwd"] + 1
    # forward: bitwise equal in every dtype (half types: same float32 math, one rounding)
    assert_close("out", got[0], ref[0], dtype, exact=True)
    for k in range(len(got[1])):
        assert_close(f"final[{k}]", got[1][k], ref[1][k], dtype, exact=True)
        assert_close(f"traj[{k}]", got[2][k], ref[2][k], dtype, exact=True)
    for k, (a, b) in enumerate(zip(got[3], ref[3])):
        assert_close(f"grad[{k}]", a, b, dtype)


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("reset, delay", [("subtract", False), ("zero", False), ("none", False),
                                          ("subtract", True), ("zero", True)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_lif_cuda_matches_reference(kind, reset, delay, dtype, cuda_device):
    case = make_case(kind, per_neuron=True, dtype=torch.float64, reset=reset, delay=delay,
                     shape=(40, 3, 333))
    compare(K, *to_cuda(*case[:3], dtype, cuda_device), dtype)


@pytest.mark.parametrize("surrogate", ["atan", "fast_sigmoid", "sigmoid", "triangle",
                                       "straight_through"])
def test_lif_cuda_surrogates(surrogate, cuda_device):
    case = make_case("alif_syn", per_neuron=False, dtype=torch.float64, surrogate=surrogate)
    compare(K, *to_cuda(*case[:3], torch.float32, cuda_device), torch.float32)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1000, 1, 3), (3, 2, 129)])
def test_lif_cuda_awkward_sizes(shape, cuda_device):
    case = make_case("cuba", per_neuron=True, dtype=torch.float64, shape=shape)
    compare(K, *to_cuda(*case[:3], torch.float64, cuda_device), torch.float64)


@pytest.mark.parametrize("kind", ["lif", "cuba"])
@pytest.mark.parametrize("loss", ["sum", "spike count"])
def test_lif_cuda_gradient_broadcast_over_time_is_read_as_one_row(kind, loss, cuda_device,
                                                                   monkeypatch):
    """The gradient of a sum over steps arrives broadcast over time (stride 0): the backward
    kernel gets its one row with time stride 0 (no [T, M] copy) and gives the reference's
    gradients."""
    case = make_case(kind, per_neuron=True, dtype=torch.float64, shape=(30, 3, 70))
    x, state, p, leaves = to_cuda(*case[:3], torch.float64, cuda_device)
    seen = []
    real = CU._grad_rows

    def spy(g, m):
        row, ts = real(g, m)
        seen.append((tuple(row.shape), ts, m))
        return row, ts
    monkeypatch.setattr(CU, "_grad_rows", spy)
    assert_time_summed_loss_grads(K.run, x, state, p, leaves, loss, "cuda")
    m = x[0].numel()
    assert seen == [((1, m), 0, m)]


@pytest.mark.parametrize("syn", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_li_cuda_matches_reference(syn, dtype, cuda_device):
    case = make_li(syn, True, torch.float64)
    compare(KLI, *to_cuda(*case[:3], dtype, cuda_device), dtype)


@needs_gpu
def test_cuda_torch_compile():
    x, state, p, _ = to_cuda(*make_case("alif_syn", per_neuron=True, dtype=torch.float64,
                                        shape=(8, 2, 64))[:3], torch.float32)

    def f(x):
        out, final, traj = CU.run_lif(x, state, p, record=True)
        return out.sum() + final.v.sum() + traj.v.pow(2).sum()
    eager = torch.autograd.grad(f(x), x)[0]
    compiled = torch.autograd.grad(torch.compile(f, fullgraph=True)(x), x)[0]
    assert_close("compiled grad x", compiled, eager, torch.float32)
