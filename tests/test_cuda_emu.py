"""The CPU emulator of the CUDA kernels (tests/cuda_emu.py) finds what it claims to find.

The emulator stands in for a GPU in CI, so its own checks must be able to fail: argument
signatures, launch limits, barrier divergence, deadlocks, warp collectives with missing lanes,
shared memory read before written, and races (by the two thread orders). The float16/bfloat16
conversions of spiking/kernels/cuda/dtypes.cuh are checked against torch's.
"""

import re
import subprocess
import sys

import cuda_emu as E
import numpy as np
import pytest
import torch

from spiking.kernels import nvrtc

if E.unavailable():
    pytest.skip(E.unavailable(), allow_module_level=True)

SAXPY = r"""
extern "C" __global__ void saxpy(const float* x, long long n, float a, float* y) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = a * x[i] + y[i];
}
"""


def module(code, options=()):
    return E.RawModule(code=code, options=options)


def arr(t):
    return E.EmuArray(t)


def test_kernel_runs_every_thread_of_every_block():
    fn = module(SAXPY).get_function("saxpy")
    assert fn.signature == ["p", "i8", "f4", "p"]
    x, y = torch.arange(1000, dtype=torch.float32), torch.ones(1000)
    fn((3,), (128,), (arr(x), np.int64(1000), np.float32(2.0), arr(y)))  # 384 threads, strided
    assert torch.equal(y, 2 * torch.arange(1000, dtype=torch.float32) + 1)


@pytest.mark.parametrize("args,match", [
    (lambda x, y: (arr(x), np.int32(10), np.float32(2.0), arr(y)),
     "argument 1: the kernel takes an integer of 8 bytes, got an integer of 4 bytes"),
    (lambda x, y: (arr(x), np.int64(10), np.float64(2.0), arr(y)),
     "argument 2: the kernel takes a float of 4 bytes, got a float of 8 bytes"),
    (lambda x, y: (arr(x), np.int64(10), 2.0, arr(y)),  # a Python float is passed as a double
     "argument 2: the kernel takes a float of 4 bytes, got a float of 8 bytes"),
    (lambda x, y: (arr(x), np.int64(10), np.float32(2.0)), "takes 4 arguments, 3 given"),
    (lambda x, y: (x, np.int64(10), np.float32(2.0), arr(y)), "not something CuPy passes"),
    (lambda x, y: (arr(x), np.int64(10), np.float32(2.0), arr(y.view(5, 2).t())),
     "argument 3: a non-contiguous array"),
])
def test_arguments_are_checked_against_the_signature(args, match):
    fn = module(SAXPY).get_function("saxpy")
    x, y = torch.zeros(10), torch.zeros(10)
    with pytest.raises(E.EmulationError, match=match):
        fn((1,), (32,), args(x, y))


@pytest.mark.parametrize("grid,block,shared,match", [
    ((1,), (2048,), 0, "exceeds CUDA's limits"), ((1,), (8, 8, 128), 0, "exceeds CUDA's limits"),
    ((0,), (32,), 0, "empty launch"), ((1,), (32,), 64 * 1024, "dynamic shared memory"),
])
def test_launch_limits(grid, block, shared, match):
    fn = module(SAXPY).get_function("saxpy")
    x = torch.zeros(4)
    with pytest.raises(E.EmulationError, match=match):
        fn(grid, block, (arr(x), np.int64(4), np.float32(1), arr(x)), shared_mem=shared)


def test_unknown_kernel_and_option():
    with pytest.raises(E.EmulationError, match="no kernel 'nope'"):
        module(SAXPY).get_function("nope")
    with pytest.raises(E.EmulationError, match="--use_fast_math"):
        module(SAXPY, ("--use_fast_math",))


BARRIERS = r"""
extern "C" __global__ void divergent(float* y) {
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    y[threadIdx.x] = 1.f;
}
extern "C" __global__ void deadlock(float* y) {
    float v = threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_down_sync(0xffffffffu, v, 1);
    else __syncthreads();
    y[threadIdx.x] = v;
}
extern "C" __global__ void lanes_missing(float* y) {
    float v = threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_down_sync(0xffffffffu, v, 1);
    y[threadIdx.x] = v;
}
extern "C" __global__ void warp_sum(float* y) {
    float v = threadIdx.x + 100.f * blockIdx.x;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) atomicAdd(&y[0], v);
}
extern "C" __global__ void racy(float* y, int sync) {
    extern __shared__ float buf[];
    buf[threadIdx.x] = threadIdx.x;
    if (sync) __syncthreads();
    y[threadIdx.x] = buf[(threadIdx.x + 1) % blockDim.x];
}
extern "C" __global__ void unwritten(float* y) {
    extern __shared__ float buf2[];
    y[threadIdx.x] = buf2[threadIdx.x];
}
"""


@pytest.mark.parametrize("name,block,match", [
    ("divergent", 32, "barrier divergence"), ("deadlock", 32, "deadlock"),
    ("lanes_missing", 32, "ended while other lanes of its warp wait"),
    ("warp_sum", 48, r"__shfl_down_sync\(0xffffffff\) in a warp with 16 live lanes"),
])
def test_synchronisation_errors(name, block, match):
    fn = module(BARRIERS).get_function(name)
    with pytest.raises(E.EmulationError, match=match):
        fn((1,), (block,), (arr(torch.zeros(64)),))


def test_warp_shuffle_and_atomics():
    fn = module(BARRIERS).get_function("warp_sum")
    y = torch.zeros(1)
    fn((3,), (64,), (arr(y),))  # 3 blocks x 2 warps: sum of every thread's value
    assert y.item() == 3 * sum(range(64)) + 64 * 100 * (0 + 1 + 2)


def test_thread_orders_expose_a_race(monkeypatch):
    fn = module(BARRIERS).get_function("racy")

    def run(sync):
        out = {}
        for order in ("forward", "reverse"):
            monkeypatch.setattr(E, "order", order)
            y = torch.zeros(64)
            fn((1,), (64,), (arr(y), np.int32(sync)), shared_mem=64 * 4)
            out[order] = y
        return out
    racy, synced = run(0), run(1)
    expected = torch.roll(torch.arange(64, dtype=torch.float32), -1)
    assert torch.equal(synced["forward"], expected) and torch.equal(synced["reverse"], expected)
    assert not torch.equal(racy["forward"], racy["reverse"])  # the race shows


def test_shared_memory_read_before_written_is_nan():
    y = torch.zeros(32)
    module(BARRIERS).get_function("unwritten")((1,), (32,), (arr(y),), shared_mem=32 * 4)
    assert torch.isnan(y).all()


HALF = r"""
#include "dtypes.cuh"
extern "C" __global__ void round_trip(const float* x, float* h, float* b, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    f16_t hv; bf16_t bv;
    store(&hv, x[i]);
    store(&bv, x[i]);
    h[i] = load(&hv);
    b[i] = load(&bv);
}
"""


def test_half_conversions_of_dtypes_cuh_round_as_torch():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(4000, generator=g) * 10.0 ** torch.randint(-9, 6, (4000,),
                                                                           generator=g),
                   torch.tensor([0.0, -0.0, 65504.0, 65520.0, 1e-8, 6e-8, 3e38, float("inf"),
                                 -float("inf"), float("nan")])])
    h, b = torch.empty_like(x), torch.empty_like(x)
    fn = module(HALF, (f"--include-path={nvrtc.CUDA_DIR}",)).get_function("round_trip")
    fn(((x.numel() + 127) // 128,), (128,), (arr(x), arr(h), arr(b), np.int32(x.numel())))
    torch.testing.assert_close(h, x.half().float(), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(b, x.bfloat16().float(), rtol=0, atol=0, equal_nan=True)


# ---- AddressSanitizer: reads and writes outside the tensors a kernel was given ----------------

OOB = r"""
import sys
sys.path.insert(0, {tests!r})
import numpy as np, torch, cuda_emu as E
src = '''extern "C" __global__ void copy(const float* x, float* y, int n, int past) {{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n + past) y[i] = x[i];
}}'''
fn = E.RawModule(code=src).get_function("copy")
x, y = torch.arange(100, dtype=torch.float32), torch.zeros(100)
fn((1,), (128,), (E.EmuArray(x), E.EmuArray(y), np.int32(100), np.int32(int(sys.argv[1]))))
print("copied", int(y.sum()))
"""
KERNEL_TESTS = ["tests/kernels/test_lif_cuda.py", "tests/kernels/test_ltc_cuda.py",
                "tests/kernels/test_egru.py", "tests/kernels/test_wkv.py",
                "tests/models/test_lsm.py"]


def _asan():
    env = E.asan_env()
    if env is None:
        pytest.skip("g++ has no libasan here")
    return env


@pytest.mark.slow
def test_device_tracker_refuses_what_a_gpu_refuses():
    """GPU tensors are those moved or made with device=E.DEVICE (and what is computed from
    them); host ones are made without a device. Mixing them, .numpy() of a GPU tensor and a
    host tensor handed to a kernel raise; 0-dim host tensors, unknown tensors (the code's own
    device=x.device, plain "cpu" here), copies and indexing mix."""
    with E.DeviceTracker() as tr:
        g = torch.ones(4).to(E.DEVICE)
        h = torch.ones(4)
        assert tr.side(g) == E.DEV and tr.side(h) == E.HOST
        assert tr.side(g * 2 + torch.tensor(3.0)) == E.DEV  # python and 0-dim host scalars
        for bad in (lambda: g + h, lambda: torch.cat([g, h]), lambda: h.mul_(g)):
            with pytest.raises(E.EmulationError, match="host .CPU. tensor of shape .4,."):
                bad()
        with pytest.raises(E.EmulationError, match="numpy"):
            g.numpy()
        u = torch.zeros(4, device=g.device)  # plain "cpu": the device of the code's choosing
        assert tr.side(u) is None and tr.side(g + u) == E.DEV and tr.side(h + u) is None
        assert tr.side(h.to(g.device)) is None  # .to(x.device) may return h itself: unknown
        assert tr.side(torch.zeros(2, device=E.DEVICE)) == E.DEV
        assert tr.side(g.double().cpu()) is None  # .cpu() of a CPU tensor returns it itself
        g.copy_(torch.arange(4.0))  # host -> GPU copies and CPU indices are fine on a GPU
        assert g[torch.tensor([0, 2])].tolist() == [0.0, 2.0]
        lin = torch.nn.Linear(4, 2)
        assert tr.side(lin.weight) is None  # made by nn.Parameter, outside torch's functions
        lin.to(E.DEVICE)  # Module.to sets param.data: the Parameter itself moves
        assert tr.side(lin.weight) == E.DEV and tr.side(lin(g)) == E.DEV
        with pytest.raises(E.EmulationError, match="host .CPU. tensor of shape .4,. was handed"):
            module(SAXPY).get_function("saxpy")((1,), (4,), (arr(torch.ones(4)), np.int64(4),
                                                              np.float32(1), arr(g)))
        host = torch.ones(4)
        with pytest.raises(E.EmulationError, match="saxpy argument 0: the data of a host"):
            module(SAXPY).get_function("saxpy")((1,), (4,), (np.uint64(host.data_ptr()),
                                                              np.int64(4), np.float32(1), arr(g)))
        module(SAXPY).get_function("saxpy")((1,), (4,), (arr(g), np.int64(4), np.float32(1),
                                                         arr(u)))
        module(SAXPY).get_function("saxpy")((1,), (4,), (np.uint64(g.data_ptr()), np.int64(4),
                                                         np.float32(1), np.uint64(u.data_ptr())))
    assert E.TRACKER is None
    torch.ones(2).numpy()  # and nothing is checked outside


def test_address_sanitizer_catches_a_read_past_the_end(tmp_path):
    script = tmp_path / "oob.py"
    script.write_text(OOB.format(tests=str(E.HERE)))

    def run(past):
        return subprocess.run([sys.executable, str(script), str(past)], env=_asan(),
                              capture_output=True, text=True, timeout=600)
    ok, bad = run(0), run(1)
    assert ok.returncode == 0 and "copied 4950" in ok.stdout, ok.stderr[-2000:]
    assert bad.returncode != 0
    assert "heap-buffer-overflow" in bad.stderr and "kernel.cu:3" in bad.stderr, bad.stderr[-2000:]


@pytest.mark.slow
def test_every_kernel_stays_in_bounds_under_address_sanitizer(tmp_path):
    """The emulated kernel tests (index order) again, the kernels built with ASan. ASan's
    report goes to files: pytest's capture of stderr would swallow it when ASan aborts."""
    env = _asan()
    env["ASAN_OPTIONS"] += f":log_path={tmp_path / 'asan'}"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        *KERNEL_TESTS, "-k", "emulated and not reverse"], env=env,
                       cwd=E.HERE.parent, capture_output=True, text=True, timeout=1500)
    reports = [p.read_text() for p in tmp_path.glob("asan.*")]
    errors = [t for t in reports if "ERROR: AddressSanitizer" in t]
    assert not errors, errors[0][:4000]
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    summary = r.stdout.strip().splitlines()[-1]  # e.g. "132 passed, 364 deselected in 148s"
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 100, summary
    assert "failed" not in summary and "skipped" not in summary and "error" not in summary, summary
