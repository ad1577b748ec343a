"""WKV forward+backward: reference loop vs fused kernels, side by side in one run.

    python benchmarks/wkv.py [--T 256 --B 8 --C 256 --repeat 5 --dtype float32]

Times the median of ``--repeat`` runs of forward + backward (``(y * g).sum().backward()``)
after one warm-up (which includes numba's JIT compile). On CUDA tensors (``--device cuda``)
the fused path is the CuPy kernel and timings synchronise the device.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from spiking.kernels import wkv as K


def timed(fn, device: str, repeat: int) -> float:
    fn()                                                   # warm-up (JIT / NVRTC compile)
    out = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--C", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args(argv)
    dt = getattr(torch, a.dtype)
    g = torch.Generator().manual_seed(0)
    w = (torch.rand(a.C, generator=g) + 0.1).to(a.device, dt).requires_grad_()
    u = torch.randn(a.C, generator=g).to(a.device, dt).requires_grad_()
    k = torch.randn(a.T, a.B, a.C, generator=g).to(a.device, dt).requires_grad_()
    v = torch.randn(a.T, a.B, a.C, generator=g).to(a.device, dt).requires_grad_()
    wt = torch.randn(a.T, a.B, a.C, generator=g).to(a.device, dt)
    fused = "cuda" if a.device == "cuda" else "cpu"

    def make(backend):
        def fn():
            for x in (w, u, k, v):
                x.grad = None
            y, _ = K.run(w, u, k, v, backend=backend)
            (y * wt).sum().backward()
        return fn

    print(f"WKV forward+backward, T={a.T} B={a.B} C={a.C} {a.dtype} on {a.device}, "
          f"torch threads={torch.get_num_threads()}, median of {a.repeat}")
    t_ref = timed(make("reference"), a.device, a.repeat)
    t_fus = timed(make(fused), a.device, a.repeat)
    print(f"  reference loop : {t_ref * 1e3:9.2f} ms")
    print(f"  fused ({fused:<4})   : {t_fus * 1e3:9.2f} ms")
    print(f"  speed-up       : {t_ref / t_fus:9.1f} x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
