"""EGRU speed on CPU: fused (numba) vs its reference loop vs torch.nn.GRU, forward + backward.

Usage: ``python benchmarks/egru.py [--T 100 --B 32 --H 256 --reps 5]``. Prints one table over an
activity sweep (1-50 % of units emitting an event per step). Activity is set by a scalar threshold
found by bisection on random weights and inputs; the input projection ``wx`` is given (the same
dense input matmul precedes every variant, so it is left out of all three).
Columns: activity (fraction of non-zero ``y``), backward support (fraction of unit-steps with
``e + c g != 0``), milliseconds per forward+backward, and the ratios.

Timing: best of ``--reps``; ``--clock cpu`` (default) measures process CPU time with one thread
for every variant (``--threads 1``), which is robust on a shared, loaded machine; ``--clock
wall`` with ``--threads 2`` measures elapsed time with both cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from spiking.kernels import egru as K


def make(T, B, H, seed=0):
    g = torch.Generator().manual_seed(seed)
    wx = torch.randn(T, B, 3 * H, generator=g) * 0.8
    w = torch.randn(3 * H, H, generator=g) / H ** 0.5
    return wx, w


def activity(wx, w, theta, backend="cpu"):
    h = w.shape[1]
    p = K.EGRUParams(w, torch.full((h,), float(theta)))
    with torch.no_grad():
        y, _, tr = K.run(wx, None, p, backend=backend, record=True)
    d = tr.c - p.threshold
    support = ((d > 0) | (p.surrogate.grad(d) != 0)).float().mean().item()
    return (y != 0).float().mean().item(), support


def calibrate(wx, w, target):
    lo, hi = -1.0, 1.5
    for _ in range(14):
        mid = (lo + hi) / 2
        a, _ = activity(wx, w, mid)
        lo, hi = (mid, hi) if a > target else (lo, mid)
    return (lo + hi) / 2


CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
clock = time.process_time


def time_fb(fn, reps):
    fn()  # warm-up (compiles numba on first use)
    best = float("inf")
    for _ in range(reps):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best * 1e3


def egru_fb(wx, w, theta, backend):
    h = w.shape[1]
    wx_ = wx.clone().requires_grad_()
    w_ = w.clone().requires_grad_()
    th = torch.full((h,), float(theta), requires_grad=True)

    def f():
        y, _ = K.run(wx_, None, K.EGRUParams(w_, th), backend=backend)
        y.sum().backward()
    return f


def gru_fb(T, B, H):
    gru = torch.nn.GRU(H, H)
    x = torch.randn(T, B, H, requires_grad=True)

    def f():
        y, _ = gru(x)
        y.sum().backward()
    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--levels", default="0.01,0.02,0.05,0.1,0.2,0.5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=tuple(CLOCK), default="cpu")
    a = ap.parse_args()
    global clock
    clock = CLOCK[a.clock]
    torch.set_num_threads(a.threads)
    import numba
    numba.set_num_threads(a.threads)
    torch.manual_seed(0)
    wx, w = make(a.T, a.B, a.H)
    # torch.nn.GRU includes its input matmul (H x 3H); its recurrent part alone is costlier.
    t_gru = time_fb(gru_fb(a.T, a.B, a.H), a.reps)
    print(f"# EGRU fwd+bwd, T={a.T} B={a.B} H={a.H}, float32, threads={a.threads}, "
          f"clock={a.clock}, cpu={platform.processor() or platform.machine()}, "
          f"cores={os.cpu_count()}", flush=True)
    print(f"# torch.nn.GRU fwd+bwd (incl. its input matmul): {t_gru:.1f} ms", flush=True)
    print(f"{'target':>7} {'activity':>9} {'bwd supp':>9} {'fused ms':>9} {'ref ms':>9} "
          f"{'ref/fused':>10} {'GRU/fused':>10}")
    for target in (float(v) for v in a.levels.split(",")):
        theta = calibrate(wx, w, target)
        act, supp = activity(wx, w, theta)
        t_f = time_fb(egru_fb(wx, w, theta, "cpu"), a.reps)
        t_r = time_fb(egru_fb(wx, w, theta, "reference"), max(1, a.reps // 2))
        print(f"{target:>7.2f} {act:>9.3f} {supp:>9.3f} {t_f:>9.1f} {t_r:>9.1f} "
              f"{t_r / t_f:>10.1f} {t_gru / t_f:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
