r"""Fixed-point, event-driven simulation of a SpiNNaker-like mapped network
(:func:`spiking.hardware.spinnaker.map_network`).

What runs is what was mapped: the weights are the mapper's ``weight_fixed`` integers (signed
``bits``, ``frac_bits`` fractional bits per projection), synaptic input arrives only from
spikes, routed through the chips' multicast tables (:func:`router`: the key of a spike of
neuron ``j`` of a slice is ``key | (j - start)``; every table entry with ``key & mask ==
entry key`` delivers it to its cores, where the core's own synapse rows for that source are
added). Each population's state is integer with ``F`` fractional bits (``F`` = the largest
``frac_bits`` of its incoming projections, so every weight enters exactly as
``w_q << (F - f_p)``); decays and gains are ``D``-bit fractions (``a_q = round(a 2^D)``).
The update is the LIF family of :mod:`spiking.kernels.lif` (``reset_delay=False``,
``current_first=True``, no adaptation) with every product rounded to nearest, ties towards
``+inf``, ``rnd(p) = (p + 2^(D-1)) >> D`` (arithmetic shift)::

    I[t]  = sum over routed spikes of w_q << (F - f_p)  (+ bias_q every step)
    i[t]  = rnd(as_q * i[t-1]) + I[t]                    (CubaLIF; LIF: i[t] = I[t])
    h[t]  = rnd(am_q * v[t-1]) + leak_q + rnd(g_q * i[t])   (g = 1: exactly i[t])
    s[t]  = h[t] > th_q
    v[t]  = h[t] - th_q * s[t]      (subtract)   |   v_reset_q if s[t] else h[t]   (zero)

with ``leak_q = round((1 - a_mem) v_leak 2^F)``, ``th_q = round(theta 2^F)``. Timing:
``timing="model"`` delivers spikes of a feed-forward projection in the same step (populations
are updated in order, as :class:`spiking.Sequential` does) and of a recurrent projection
(``pre == post``) in the next, which reproduces the float model (a feed-forward synapse
with ``delay`` D > 1, a tap of a :class:`~spiking.models.delays.DelayedLinear`, D - 1 steps
later); ``timing="hardware"`` uses each synapse's ``delay`` (>= 1 step) literally, as
SpiNNaker would deliver the packets.

With weights, decays, gains and thresholds exactly representable (e.g. powers of two) and no
overflow, the spikes equal the float model's exactly and the membranes equal them while the
decayed products fit ``F`` fractional bits, later differing by at most the accumulated rounding
``2^-(F+1) / (1 - a_mem)`` (tests); otherwise the spikes agree up to the rounding, reported as
the fraction of matching spike-train entries (:func:`agreement`, benchmarks). For reference,
sPyNNaker's neuron state is ``s16.15`` fixed point; here ``F`` follows the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NeuronConfig:
    """Float LIF parameters of one population (scalars or ``[n]`` arrays)."""

    alpha_mem: np.ndarray
    threshold: np.ndarray
    alpha_syn: np.ndarray | None = None
    gain: np.ndarray | float = 1.0
    v_leak: np.ndarray | float = 0.0
    v_reset: np.ndarray | float = 0.0
    reset: str = "subtract"
    bias: np.ndarray | float = 0.0


def neuron_config(neuron, n: int, bias=None) -> NeuronConfig:
    """The :class:`NeuronConfig` of a LIF/CubaLIF module (float32, as the model runs)."""
    import torch

    p = neuron.params(torch.zeros(1, n))
    if p.alpha_adapt is not None or p.reset_delay or not p.current_first or p.reset == "none":
        raise ValueError(f"{type(neuron).__name__}: the fixed-point simulator supports LIF / "
                         f"CubaLIF with reset 'subtract' or 'zero', reset_delay=False, "
                         f"current_first=True")

    def arr(v):
        return np.broadcast_to(torch.as_tensor(v).detach().double().numpy(), (n,)).copy()
    return NeuronConfig(arr(p.alpha_mem), arr(p.threshold),
                        None if p.alpha_syn is None else arr(p.alpha_syn), arr(p.gain),
                        arr(p.v_leak), arr(p.v_reset), p.reset,
                        arr(0.0 if bias is None else bias))


def router(m) -> dict:
    """``{source key: set of target cores}`` by matching every slice's key against every
    chip's table, through delay-extension cores where a slice has long delays (the routing
    tables are the only source of where spikes go)."""
    from spiking.hardware.spinnaker import reached_cores

    return {s.key: reached_cores(m, s.key) for s in m.slices}


def _rnd(p: np.ndarray, d: int) -> np.ndarray:
    return (p + (1 << (d - 1))) >> d


def simulate(m, neurons: dict, input_spikes: dict, steps: int | None = None, *,
             timing: str = "model", decay_bits: int = 16, record_v: bool = False):
    """Run the mapping ``m`` with ``neurons`` (population -> :class:`NeuronConfig`) driven by
    ``input_spikes`` (population -> bool ``[T, n]``, for populations without neurons).
    Returns ``{population: bool [T, n]}`` (and ``{population: v_q int64 [T, n]}`` and the
    state fractional bits with ``record_v``)."""
    if timing not in ("model", "hardware"):
        raise ValueError(f"timing must be 'model' or 'hardware', got {timing!r}")
    steps = steps or max(np.asarray(v).shape[0] for v in input_spikes.values())
    pops = list(m.populations)
    for p in pops:
        if (p in neurons) == (p in input_spikes):
            raise ValueError(f"population {p!r} needs exactly one of a NeuronConfig or input "
                             f"spikes")
    slice_of = {p: [s for s in m.slices if s.population == p] for p in pops}
    routes = router(m)
    core_of = {p: m.core_of(p) for p in pops}
    frac = {p: max([m.quantised[pr.name].frac_bits for pr in m.projections if pr.post == p],
                   default=0) for p in neurons}
    # per projection: synapse rows by (source neuron, target core), CSR over sources
    syn = []
    for pr in m.projections:
        q = m.quantised[pr.name]
        if pr.post not in neurons:
            raise ValueError(f"projection {pr.name!r} targets {pr.post!r}, which has no neurons")
        w = q.weight_fixed.astype(np.int64) << (frac[pr.post] - q.frac_bits)
        tcore = core_of[pr.post][pr.post_idx]
        order = np.lexsort((tcore, pr.pre_idx))
        pre, tc, post, w = pr.pre_idx[order], tcore[order], pr.post_idx[order], w[order]
        ptr = np.searchsorted(pre, np.arange(pr.n_pre + 1))
        syn.append((pr, ptr, tc, post, w, np.asarray(pr.delay, dtype=np.int64)[order]))
    d = int(decay_bits)
    max_delay = max([1] + [int(s_[5].max()) for s_ in syn if s_[5].size])
    st, out, vrec = {}, {}, {}
    for p, c in neurons.items():
        n, f = m.populations[p], frac[p]

        def fx(v, bits=f, n=n):
            return np.broadcast_to(np.round(np.asarray(v, dtype=np.float64) * 2.0 ** bits)
                                   .astype(np.int64), (n,)).copy()
        st[p] = {"v": fx(c.v_leak), "i": np.zeros(n, np.int64), "am": fx(c.alpha_mem, d),
                 "as": None if c.alpha_syn is None else fx(c.alpha_syn, d),
                 "g": fx(c.gain, d), "unit_gain": bool(np.all(np.asarray(c.gain) == 1.0)),
                 "leak": fx((1 - np.asarray(c.alpha_mem)) * np.asarray(c.v_leak)),
                 "th": fx(c.threshold), "vr": fx(c.v_reset), "bias": fx(c.bias),
                 "pending": np.zeros((steps + max_delay + 1, n), np.int64)}
        out[p] = np.zeros((steps, n), bool)
        vrec[p] = np.zeros((steps, n), np.int64)
    for p, s in input_spikes.items():
        out[p] = np.asarray(s, dtype=bool)[:steps]

    def deliver(pr_i, t, spikes):
        pr, ptr, tc, post, w, delay = syn[pr_i]
        for j in np.flatnonzero(spikes):
            sl = next(s for s in slice_of[pr.pre] if s.start <= j < s.stop)
            reached = routes[sl.key]              # the key (key | local index) matches these
            a, b = ptr[j], ptr[j + 1]
            ok = np.isin(tc[a:b], list(reached))
            if not ok.all():
                raise AssertionError(f"routing misses cores of {pr.name} neuron {j}")
            if timing == "model":   # the hop of a feed-forward projection costs no step
                lag = delay[a:b] - (0 if pr.pre == pr.post else 1)
                np.add.at(st[pr.post]["pending"], (t + lag, post[a:b]), w[a:b])
            else:
                for k in range(a, b):
                    if t + delay[k] < steps:
                        st[pr.post]["pending"][t + delay[k], post[k]] += w[k]

    for t in range(steps):
        for p in pops:
            if p in neurons:
                s_ = st[p]
                cur = s_["pending"][t] + s_["bias"]
                s_["i"] = cur if s_["as"] is None else _rnd(s_["as"] * s_["i"], d) + cur
                drive = s_["i"] if s_["unit_gain"] else _rnd(s_["g"] * s_["i"], d)
                h = _rnd(s_["am"] * s_["v"], d) + s_["leak"] + drive
                spk = h > s_["th"]
                if neurons[p].reset == "subtract":
                    s_["v"] = h - s_["th"] * spk
                else:
                    s_["v"] = np.where(spk, s_["vr"], h)
                out[p][t], vrec[p][t] = spk, s_["v"]
            for i, (pr, *_rest) in enumerate(syn):
                if pr.pre == p:
                    deliver(i, t, out[p][t])
    if record_v:
        return out, vrec, frac
    return out


def from_model(model, x, *, machine=None, **kw):
    """Map a :class:`spiking.Sequential` (Linear / Conv / Recurrent / LIF / CubaLIF layers; no
    pooling: TypeError) with binary input ``x`` ``[T, 1, ...]`` and simulate it in fixed point.
    Returns ``(simulated spikes, float-model spikes, mapping)``, both
    ``{population: bool [T, n]}``."""
    from torch import nn

    from spiking.hardware import spinnaker
    from spiking.models.delays import DelayedLinear
    from spiking.models.recurrent import Recurrent

    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError("the fixed-point simulator needs binary input spikes (0/1)")
    if not isinstance(model, nn.Sequential) and hasattr(model, "to_sequential"):
        model = model.to_sequential()
    pools = [f"{i} ({type(m).__name__})" for i, m in enumerate(model)
             if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d))]
    if pools:
        raise TypeError(f"the fixed-point simulator does not support pooling layers (layer "
                        f"{', '.join(pools)}): their biases and composed synapses are not "
                        f"simulated; map the network with spinnaker.network_from_model and "
                        f"map_network instead")
    pops, projs, spikes = spinnaker.network_from_model(model, x)
    m = spinnaker.map_network(pops, projs, machine or spinnaker.SPINNAKER2)
    neurons, bias = {}, None
    for i, layer in enumerate(model):
        if isinstance(layer, DelayedLinear):                # one bias per output neuron
            bias = layer.conv.bias
        elif isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            bias = layer.bias
            if bias is not None and not isinstance(layer, nn.Linear):   # per channel
                bias = bias.repeat_interleave(pops[f"pop{i + 1 + _skip(model, i)}"]
                                              // layer.out_channels)
        elif f"pop{i}" in pops:
            neuron = layer.neuron if isinstance(layer, Recurrent) else layer
            b = None if bias is None else bias.detach()
            if isinstance(layer, Recurrent):
                for lin in (layer.input, getattr(layer, "recurrent", None)):
                    if lin is not None and lin.bias is not None:
                        b = lin.bias.detach() if b is None else b + lin.bias.detach()
            neurons[f"pop{i}"] = neuron_config(neuron, pops[f"pop{i}"], b)
            bias = None
    sim = simulate(m, neurons, {"input": spikes["input"]}, x.shape[0], **kw)
    return sim, spikes, m


def _skip(model, i) -> int:
    """Layers between weight layer ``i`` and the population it feeds (Flatten, Dropout...)."""
    k = 0
    while f"{type(model[i + 1 + k]).__name__}" in ("Flatten", "Identity", "Dropout"):
        k += 1
    return k


def agreement(a: dict, b: dict) -> dict:
    """Per population: fraction of matching ``[T, n]`` entries and of identical spike trains."""
    return {p: {"entries": float((a[p] == b[p]).mean()),
                "trains": float((a[p] == b[p]).all(0).mean())} for p in a if p in b}
