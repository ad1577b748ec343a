"""Hardware-layer benchmark: map and profile a 100,000-neuron, 10-million-synapse network with
1,000 recorded steps (target: <= 30 s on a 2-core machine), and count every registry model.

Run: python benchmarks/hardware.py [--neurons 100000 --synapses 10000000 --steps 1000]

``--counts``: NeuroBench-style operation counts (:func:`spiking.hardware.counting.count`) of
every registry model on 4 real recordings (FSDD in SHD format, 100 bins; the CSNN on the N-MNIST
subset, 30 bins), one row per model, as a Markdown table.

``--crossbar-sweep``: the memristive LSM on the N-MNIST subset (``$SPIKING_DATA/nmnist-subset``,
1,000 train / 100 test recordings): float LSM vs reservoirs drawn from the RRAM device model
(:mod:`spiking.hardware.memristive_lsm`), ridge readout, test accuracy vs conductance levels and
vs read noise; writes ``--sweep-out`` (JSON) and a plot beside it (matplotlib Agg).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

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
    ap.add_argument("--crossbar-sweep", action="store_true",
                    help="memristive LSM accuracy sweep on N-MNIST instead of the mapping run")
    ap.add_argument("--fixedpoint", action="store_true",
                    help="fixed-point simulator vs float model agreement on a random network")
    ap.add_argument("--counts", action="store_true",
                    help="operation counts of every registry model on real recordings")
    ap.add_argument("--egru", action="store_true",
                    help="char-level EGRU at batch 1: SpiNNaker 2 vs GPU energy estimates")
    ap.add_argument("--sweep-neurons", type=int, default=1000)
    ap.add_argument("--sweep-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--sweep-out", default=str(Path(__file__).parent / "figures"
                                               / "hardware_crossbar_sweep.json"))
    args = ap.parse_args(argv)
    if args.crossbar_sweep:
        return crossbar_sweep(args)
    if args.fixedpoint:
        return fixedpoint(args)
    if args.egru:
        return egru_profile(args)
    if args.counts:
        return counts_table(args)
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


def fixedpoint(args, seeds=(0, 1, 2)):
    """Random 500 -> 1000 LIF -> 300 recurrent CubaLIF network, 200 steps of 5 % input spikes:
    spike agreement of the fixed-point simulation with the float model per weight width."""
    from torch import nn

    import spiking
    from spiking.hardware import fixedpoint_sim as F
    from spiking.hardware import spinnaker as S
    from spiking.models.recurrent import Recurrent

    print(f"machine: {platform.processor() or platform.machine()}")
    for bits in (16, 12, 8):
        rows = []
        for seed in seeds:
            torch.manual_seed(seed)
            m = spiking.Sequential(
                nn.Linear(500, 1000), spiking.LIF(threshold=0.5, backend="reference"),
                Recurrent(spiking.CubaLIF(threshold=0.5, backend="reference"), hidden_size=300,
                          input_size=1000))
            x = (torch.rand(200, 1, 500) < 0.05).float()
            t0 = time.perf_counter()
            sim, ref, _ = F.from_model(m, x, machine=S.Machine(weight_bits=bits))
            dt = time.perf_counter() - t0
            ag = F.agreement(sim, ref)
            rows.append((ag["pop1"]["entries"], ag["pop2"]["entries"], ag["pop1"]["trains"],
                         ag["pop2"]["trains"], ref["pop1"].mean(), ref["pop2"].mean(), dt))
        r = np.array(rows)
        print(f"{bits}-bit weights: entries match {r[:, 0].mean():.5f} (LIF 1000), "
              f"{r[:, 1].mean():.5f} (recurrent 300); identical trains {r[:, 2].mean():.3f}, "
              f"{r[:, 3].mean():.3f}; rates {r[:, 4].mean():.3f}, {r[:, 5].mean():.3f}; "
              f"{r[:, 6].mean():.1f} s per run (mean of {len(seeds)} seeds)")


def egru_profile(args, hidden=512, steps=500, thresholds=(0.02, 0.05, 0.1, 0.2, 0.3)):
    """One EGRU layer (H = 512) + per-step readout on the characters of the repository's
    README (real text, one-hot, batch 1, untrained weights, torch.nn.GRU-style init): event
    counts from a forward pass per threshold, energy per character on the SpiNNaker 2 and the
    GPU (A100) profiles (both estimates; see profiles/*.toml)."""
    from torch import nn

    from spiking.hardware import counting, energy
    from spiking.kernels import egru as K
    from spiking.models.egru import EGRULayer

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    vocab = sorted(set(text))
    idx = torch.tensor([vocab.index(c) for c in text[:steps]])
    x = nn.functional.one_hot(idx, len(vocab)).float()[:, None]        # [T, 1, V]

    class Net(nn.Module):                  # counted through its op_counts (not descended into)
        def __init__(self, thr):
            super().__init__()
            self.egru = EGRULayer(len(vocab), hidden, threshold_init=thr, backend="reference")
            self.readout = nn.Linear(hidden, len(vocab))
            self.y = None

        def forward(self, inp):
            self.y, _ = self.egru(inp)
            return self.readout(self.y)

        def op_counts(self, t, b):
            ev = int((self.y != 0).sum())
            c = K.op_counts((t, b, hidden), len(vocab), events=int((self.y[:-1] != 0).sum()),
                            input_events=int((x != 0).sum()))
            c["readout_macs_dense"] = t * b * hidden * len(vocab)
            c["readout_macs_event"] = ev * len(vocab)
            return c

    class CharEGRU(nn.Module):
        def __init__(self, thr):
            super().__init__()
            self.net = Net(thr)

        def forward(self, inp):
            return self.net(inp)

    print(f"char-level EGRU, H={hidden}, V={len(vocab)}, T={steps} characters, batch 1")
    print("| threshold | activity | SpiNNaker 2 (uJ/char) | GPU A100 (uJ/char) | GPU / SpiNNaker 2 "
          "| GPU / SpiNNaker 2, dynamic only |")
    print("|---:|---:|---:|---:|---:|---:|")
    for thr in thresholds:
        torch.manual_seed(0)
        model = CharEGRU(thr)
        counts = counting.count(model, x)
        assert not counts.uncounted, counts.uncounted
        act = float((model.net.y != 0).float().mean())
        s2, gpu = energy.estimate(counts, "spinnaker2"), energy.estimate(counts, "gpu_a100")
        dyn = (gpu.total_j - gpu.static_j) / (s2.total_j - s2.static_j)
        print(f"| {thr} | {act:.3f} | {s2.total_j / steps * 1e6:.4g} | "
              f"{gpu.total_j / steps * 1e6:.4g} | {gpu.total_j / s2.total_j:.3g} | {dyn:.3g} |")


def _data_root() -> Path:
    return Path(os.environ.get("SPIKING_DATA", Path(__file__).resolve().parents[1].parent
                               / "shared" / "data"))


def counts_table(args, batch: int = 4):
    """One row of per-sample counts for every registry model (initialisation weights)."""
    from spiking.datasets.binning import bin_events_batch
    from spiking.datasets.nmnist import NMNIST
    from spiking.datasets.shd import SHD
    from spiking.hardware.counting import count
    from spiking.models.registry import available_models, get_model

    root = _data_root()
    audio = SHD(file=root / "fsdd-shd-format" / "fsdd_shd_format_test.h5")
    xa, _ = bin_events_batch([audio[i][0] for i in range(batch)], audio.sensor_size,
                             n_time_bins=100)
    xa = xa.reshape(xa.shape[0], batch, -1)
    cam = NMNIST(root / "nmnist-subset", train=False)
    xc, _ = bin_events_batch([cam[i][0] for i in range(batch)], cam.sensor_size, n_time_bins=30)
    print(f"machine: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}; per-sample counts, B = {batch}, initialisation weights (seed 0)")
    print("audio: FSDD in SHD format, 700 channels, 100 bins; camera: N-MNIST subset, 30 bins\n")
    cols = ("dense", "effective_macs", "effective_acs", "membrane_updates", "neuron_ops",
            "spikes")
    print("| model | input | params | " + " | ".join(cols) + " | act. sparsity | time |")
    print("|---|---|---:|" + "---:|" * len(cols) + "---:|---:|")
    for name in available_models():
        torch.manual_seed(0)
        x = xc if name == "csnn" else xa
        m = get_model(name, input_shape=tuple(x.shape[2:]), n_classes=10)
        t0 = time.perf_counter()
        c = count(m, x)
        dt = time.perf_counter() - t0
        tot = c.totals()
        cells = " | ".join(f"{tot[k]:,.0f}" for k in cols)
        print(f"| {name} | {'N-MNIST' if name == 'csnn' else 'FSDD-SHD'} | {c.parameters:,} | "
              f"{cells} | {tot['activation_sparsity']:.3f} | {dt:.2f} s |")
        if c.uncounted:
            print(f"|  | not counted: {', '.join(c.uncounted)} |")


def crossbar_sweep(args):
    import numpy as np

    from spiking.hardware import memristive_lsm as M

    root = _data_root() / "nmnist-subset"
    print(f"machine: {platform.processor() or platform.machine()}, torch threads "
          f"{torch.get_num_threads()}, data {root}")
    t0 = time.perf_counter()
    data = M.load_nmnist(root, bins=30)
    res = M.run(data, n_neurons=args.sweep_neurons, seeds=args.sweep_seeds)
    res["seconds"] = time.perf_counter() - t0
    out = Path(args.sweep_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    lv = list(res["levels"])
    xs = np.arange(len(lv))
    for key, lab in (("float_readout", "reservoir on device, float readout"),
                     ("crossbar_readout", "reservoir and readout on device")):
        vals = np.array([[r[key] for r in res["levels"][k]] for k in lv])
        a1.errorbar(xs, vals.mean(1), yerr=vals.std(1), marker="o", capsize=3, label=lab)
    a1.axhline(np.mean(res["float"]), color="k", ls="--", label="float LSM")
    a1.set_xticks(xs, ["analog" if k == "None" else k for k in lv])
    a1.set_xlabel("conductance levels")
    a1.set_ylabel("N-MNIST test accuracy (100 samples)")
    a1.legend(fontsize=7)
    rn = list(res["read_noise"])
    vals = np.array([res["read_noise"][k] for k in rn])
    a2.errorbar([float(k) for k in rn], vals.mean(1), yerr=vals.std(1), marker="o", capsize=3)
    a2.set_xscale("symlog", linthresh=0.01)
    a2.set_xlabel("readout read noise (relative std per cell read)")
    a2.axhline(np.mean(res["float"]), color="k", ls="--")
    fig.suptitle("Memristive LSM (RRAM device model), ridge readout")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {out} and {out.with_suffix('.png')} ({res['seconds']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
