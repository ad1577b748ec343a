"""LSM reservoir step: event-driven CSR (fused numba) vs a dense matmul step, side by side.

Usage: ``python benchmarks/lsm.py [--N 4000 --B 32 --T 50 --reps 3]``. For each target activity
(fraction of neurons spiking per step, set through the input drive with
:meth:`spiking.models.lsm.LSM.scale_to_rate`), it times one reservoir sequence of ``T`` steps:

- ``event``: :func:`spiking.kernels.lsm.run` with ``backend="cpu"`` (fan-out rows of the
  spiking neurons only);
- ``dense``: the same recurrence with the recurrent input as a dense ``s[t-1] @ W`` matmul per
  step (torch/MKL), i.e. the reference loop of :mod:`spiking.kernels.lsm`.

Both include the identical elementwise LIF update. Timing: best of ``--reps``, process CPU
time with one thread (``--clock cpu``, robust on a shared machine) or wall time.
"""

from __future__ import annotations

import argparse
import time

import torch

from spiking.kernels import lsm as K
from spiking.models.lsm import LSM

CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--N", type=int, default=4000)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=50)
    ap.add_argument("--p-connect", type=float, default=0.1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--levels", default="0.01,0.05,0.1,0.2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=tuple(CLOCK), default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import numba

    numba.set_num_threads(a.threads)
    clock = CLOCK[a.clock]
    torch.manual_seed(0)
    m = LSM(100, 2, a.N, p_connect=a.p_connect, weight_scale=0.05, seed=0)
    x = (torch.rand(a.T, a.B, 100) < 0.1).float()
    p = m.params()
    fan = float((m.indptr[1:] - m.indptr[:-1]).double().mean())
    print(f"# LSM reservoir, N={a.N} B={a.B} T={a.T} p_connect={a.p_connect} (mean fan-out "
          f"{fan:.0f}), float32, threads={a.threads}, clock={a.clock}", flush=True)
    print(f"{'target':>7} {'activity':>9} {'event ms/step':>14} {'dense ms/step':>14} "
          f"{'dense/event':>12}", flush=True)
    for target in (float(v) for v in a.levels.split(",")):
        act = m.scale_to_rate(x, target, iters=10)
        cur = (x @ m.w_in) * m.input_scale
        times = {}
        for name, backend in (("event", "cpu"), ("dense", "reference")):
            K.run(cur[:2], None, p, backend=backend)  # warm-up / compile
            best = float("inf")
            for _ in range(a.reps):
                t0 = clock()
                K.run(cur, None, p, backend=backend)
                best = min(best, clock() - t0)
            times[name] = best * 1e3 / a.T
        print(f"{target:>7.2f} {act:>9.3f} {times['event']:>14.2f} {times['dense']:>14.2f} "
              f"{times['dense'] / times['event']:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
