"""Hardware-layer benchmark: map and profile a 100,000-neuron, 10-million-synapse network with
1,000 recorded steps (target: <= 30 s on a 2-core machine), and count every registry model.

Run: python benchmarks/hardware.py [--neurons 100000 --synapses 10000000 --steps 1000]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch


def big_network(n: int, n_syn: int, steps: int, rate: float, seed: int = 0):
    from spiking.hardware.spinnaker import Projection

    rng = np.random.default_rng(seed)
    n_in = n // 5
    pops = {"input": n_in, "exc": n - n_in}
    half = n_syn // 2
    pre1 = rng.integers(0, n_in, half)
    post1 = rng.integers(0, n - n_in, half)
    pre2 = rng.integers(0, n - n_in, n_syn - half)
    post2 = rng.integers(0, n - n_in, n_syn - half)
    projs = [Projection("in->exc", "input", "exc", n_in, n - n_in, pre1, post1,
                        rng.normal(size=half), np.ones(half, np.int16)),
             Projection("exc->exc", "exc", "exc", n - n_in, n - n_in, pre2, post2,
                        rng.normal(size=n_syn - half), np.ones(n_syn - half, np.int16))]
    spikes = {p: rng.random((steps, k)) < rate for p, k in pops.items()}
    return pops, projs, spikes


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--neurons", type=int, default=100_000)
    ap.add_argument("--synapses", type=int, default=10_000_000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=0.01, help="spike probability per step")
    args = ap.parse_args(argv)
    from spiking.hardware import spinnaker

    print(f"machine: {platform.processor() or platform.machine()}, torch threads "
          f"{torch.get_num_threads()}, python {platform.python_version()}")
    pops, projs, spikes = big_network(args.neurons, args.synapses, args.steps, args.rate)
    t0 = time.perf_counter()
    m = spinnaker.map_network(pops, projs)
    t1 = time.perf_counter()
    prof = spinnaker.execution_profile(m, spikes)
    t2 = time.perf_counter()
    print(f"map {args.neurons:,} neurons / {args.synapses:,} synapses: {t1 - t0:.2f} s "
          f"({m.n_cores} cores, {1 + max(s.chip for s in m.slices)} chips, "
          f"{sum(len(e) for e in m.tables.values())} routing entries)")
    print(f"profile {args.steps} steps: {t2 - t1:.2f} s; total {t2 - t0:.2f} s; max load "
          f"{prof.load.max():.3f}; real time {prof.real_time}; energy "
          f"{prof.total_energy_j * 1e3:.3f} mJ")


if __name__ == "__main__":
    main()
