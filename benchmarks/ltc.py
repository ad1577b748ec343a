"""LTC and CfC forward+backward: our reference loop, fused CPU and CUDA LTC, and ncps, in one run.

    python benchmarks/ltc.py [--T 64 --B 16 --inputs 16 --units 32 --unfolds 6 --repeat 3]

Each row times the median of ``--repeat`` runs of forward + backward (loss ``(y * g).sum()``,
gradients of the input and every parameter) after one warm-up (numba's JIT compile, NVRTC's
compile). Sequences are time-first for our layers and batch-first for ncps (its default), both
prepared before timing. ncps' ``LTC``/``CfC`` (Lechner & Hasani, Apache-2.0) use the same
update (our kernels reproduce them to rounding error, see tests/kernels/test_ltc.py and
test_cfc.py) with a fully connected wiring for an int ``units``. CfC has no fused path here: its
step is dense matmuls, so the reference is our only implementation. On a machine with a GPU
the CUDA rows are added (timings synchronise the device). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from spiking.neurons import LTC, CfC


def timed(fn, sync: bool, repeat: int) -> float:
    fn()                                                   # warm-up (JIT / NVRTC compile)
    out = []
    for _ in range(repeat):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def step_fn(module, x, weight):
    """forward + backward of ``module`` on ``x`` with a fixed random output weighting."""
    def fn():
        module.zero_grad(set_to_none=True)
        x.grad = None
        out = module(x)[0]
        (out * weight(out)).sum().backward()
    return fn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--inputs", type=int, default=16)
    ap.add_argument("--units", type=int, default=32)
    ap.add_argument("--unfolds", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    try:
        from ncps.torch import LTC as NcpsLTC
        from ncps.torch import CfC as NcpsCfC
    except ImportError:
        NcpsCfC = NcpsLTC = None
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    weights: dict[tuple, torch.Tensor] = {}

    def weight(out):
        key = (tuple(out.shape), out.device.type)
        if key not in weights:
            g = torch.Generator().manual_seed(1)
            weights[key] = torch.randn(*out.shape, generator=g).to(out.device)
        return weights[key]

    rows = []  # (model, implementation, device, seconds)
    for dev in devices:
        sync = dev == "cuda"
        g = torch.Generator().manual_seed(0)
        x = torch.randn(a.T, a.B, a.inputs, generator=g).to(dev).requires_grad_()
        xb = x.detach().transpose(0, 1).contiguous().requires_grad_()   # ncps: batch first
        for backend in ("reference", dev):
            torch.manual_seed(0)
            m = LTC(a.inputs, a.units, ode_unfolds=a.unfolds, backend=backend).to(dev)
            name = "spiking reference" if backend == "reference" else f"spiking fused {dev}"
            rows.append(("LTC", name, dev, timed(step_fn(m, x, weight), sync, a.repeat)))
        if NcpsLTC is not None:
            torch.manual_seed(0)
            m = NcpsLTC(a.inputs, a.units, ode_unfolds=a.unfolds).to(dev)
            rows.append(("LTC", "ncps", dev, timed(step_fn(m, xb, weight), sync, a.repeat)))
        torch.manual_seed(0)
        m = CfC(a.inputs, a.units).to(dev)
        rows.append(("CfC", "spiking reference", dev, timed(step_fn(m, x, weight), sync,
                                                              a.repeat)))
        if NcpsCfC is not None:
            torch.manual_seed(0)
            m = NcpsCfC(a.inputs, a.units).to(dev)
            rows.append(("CfC", "ncps", dev, timed(step_fn(m, xb, weight), sync, a.repeat)))

    print(f"LTC / CfC forward+backward, T={a.T} B={a.B} inputs={a.inputs} units={a.units} "
          f"LTC unfolds={a.unfolds}, float32, torch threads={torch.get_num_threads()}, "
          f"median of {a.repeat}\n")
    print("| model | implementation | device | fwd+bwd ms | ref / this | ncps / this |")
    print("|---|---|---|---:|---:|---:|")
    base = {(m, d, i): s for m, i, d, s in rows}
    for model, impl, dev, sec in rows:
        ref = base.get((model, dev, "spiking reference"))
        ncps = base.get((model, dev, "ncps"))
        r = f"{ref / sec:.2f}" if ref else "-"
        n = f"{ncps / sec:.2f}" if ncps else "-"
        print(f"| {model} | {impl} | {dev} | {sec * 1e3:.1f} | {r} | {n} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
