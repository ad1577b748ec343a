"""SpiNNaker-like mapping: populations onto cores and chips, fixed-point weights, multicast
routing keys, and an execution profile from recorded activity.

Machine (:class:`Machine`, preset :data:`SPINNAKER2`): cores per chip, neurons and synapse
memory per core, clock, time step, cycles per synaptic event / neuron update, energy per
event / update / packet, idle power. SpiNNaker 2 figures: 152 ARM Cortex-M4F processing
elements per chip with 128 KB local SRAM each and a 16,384-entry multicast router (SpiNNaker2
datasheet v0.03, 2021); 1 ms real-time steps (Mayr et al. 2019, arXiv:1911.02385). The per-core
neuron limit (256), synapse budget (96 KB of the 128 KB for 4-byte synaptic words, the rest
for code and neuron state), clock (150 MHz at near-threshold voltage; Höppner et al. 2021,
arXiv:2103.08392, report DVFS levels up to 300 MHz) and cycle costs (10 cycles per synaptic
event, 50 per neuron update: order of the SpiNNaker software stack's costs) are assumptions,
flagged as such; energies come from ``profiles/spinnaker2.toml``.

Mapping (:func:`map_network`): each population (a neuron layer) is split into slices of at
most ``neurons_per_core`` neurons and as many as the synapse memory allows (incoming synapses
of the slice x ``bytes_per_synapse``); slices fill cores chip by chip. Each source slice gets a
routing key (``core_index << key_shift``) and mask (``0xFFFFFFFF << key_shift``): a spike of
neuron ``j`` of the slice travels as ``key | j``. Each chip's table holds one entry per source
slice with a target on that chip (checked against ``routing_entries``). Weights are quantised
per projection to signed ``weight_bits`` fixed point with the largest fractional part that
represents the largest magnitude (``w_q = round(w * 2^f)``, clipped); weights that become 0 and
saturated weights are counted.

Delays: a neuron core delivers synapses of up to ``max_delay_steps`` (16) steps itself; a
longer delay ``D`` goes, as in sPyNNaker, through a delay-extension core
(:class:`DelayExtension`, sPyNNaker's ``DelayExtensionVertex``, which "provides delays ... in
multiples of the maximum delays of a neuron (typically 16 or 32)"): one per source slice with
such synapses, which re-sends each spike of a neuron once per delay stage ``s = (D - 1) //
max_delay_steps`` its synapses need, ``s x max_delay_steps`` steps later, and the target core
adds the rest. Its work per step is ``cycles_per_delay_neuron`` (128, sPyNNaker's
``DelayExtensionVertex.ESTIMATED_CPU_CYCLES`` per neuron) x its neurons. Delay-extension cores
take cores after the neuron cores, chip by chip, and have routing keys of their own: the source
slice's entries reach its delay core, the delay core's entries reach the targets of the long
synapses (:func:`routing_tables`).

Profile (:func:`execution_profile`): from spikes ``[T, N_pop]`` per population, per core and
step: synaptic events (incoming spikes x their synapses on the core), neuron updates,
packets sent (one per spike per source slice) and received (one per spike per target core),
cycles = events x c_syn + updates x c_neuron, load = cycles / (clock x time step) (> 1: not
real time), energy = events x e_syn + updates x e_neuron + packets x e_packet + idle power x
cores x duration. All arrays are vectorised (numpy, scipy.sparse).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Machine:
    name: str = "spinnaker2"
    cores_per_chip: int = 152
    neurons_per_core: int = 256
    synapse_bytes_per_core: int = 96 * 1024
    bytes_per_synapse: int = 4
    routing_entries: int = 16384
    clock_hz: float = 150e6
    time_step_s: float = 1e-3
    cycles_per_synaptic_event: float = 10.0
    cycles_per_neuron_update: float = 50.0
    e_synaptic_event_j: float = 10e-12
    e_neuron_update_j: float = 50e-12
    e_packet_j: float = 5e-12
    p_idle_core_w: float = 100e-3 / 152
    weight_bits: int = 16
    key_shift: int = 11
    max_delay_steps: int = 16
    cycles_per_delay_neuron: float = 128.0
    source: str = ("SpiNNaker2 datasheet v0.03 (2021): 152 PEs/chip, 128 KB SRAM/PE, 16,384 "
                   "router entries; energies from profiles/spinnaker2.toml; per-core limits, "
                   "clock and cycle costs are assumptions (see module docstring); delays "
                   "over 16 steps via delay-extension cores as sPyNNaker's "
                   "DelayExtensionVertex (16 steps and 128 cycles per neuron from it)")


SPINNAKER2 = Machine()


@dataclass(frozen=True)
class Projection:
    """Synapses from population ``pre`` to ``post``: COO arrays (pre index, post index)."""

    name: str
    pre: str
    post: str
    n_pre: int
    n_post: int
    pre_idx: np.ndarray
    post_idx: np.ndarray
    weight: np.ndarray
    delay: np.ndarray                      # in time steps (>= 1)


@dataclass(frozen=True)
class Quantised:
    weight_fixed: np.ndarray
    frac_bits: int
    bits: int
    zeroed: int
    saturated: int


def quantise(w: np.ndarray, bits: int = 16) -> Quantised:
    """Signed fixed point with the largest fractional part that holds ``max |w|``."""
    w = np.asarray(w, dtype=np.float64)
    qmax = 2 ** (bits - 1) - 1
    amax = float(np.abs(w).max()) if w.size else 0.0
    frac = bits - 1 if amax == 0 else int(np.floor(np.log2(qmax / amax)))
    q = np.round(w * 2.0 ** frac)
    sat = int(((q > qmax) | (q < -qmax - 1)).sum())
    q = np.clip(q, -qmax - 1, qmax).astype(np.int32)
    zeroed = int(((q == 0) & (w != 0)).sum())
    return Quantised(q, frac, bits, zeroed, sat)


@dataclass
class Slice:
    population: str
    start: int
    stop: int
    chip: int
    core: int
    key: int
    mask: int


@dataclass(frozen=True)
class DelayExtension:
    """A delay-extension core for the source slice ``slices[source]``: ``stages[i, s - 1]``
    says neuron ``i`` of the slice has synapses needing stage ``s`` (re-sent ``s x
    max_delay_steps`` steps after it spikes)."""

    source: int
    chip: int
    core: int
    stages: np.ndarray                      # [slice neurons, max stage] bool


@dataclass
class Mapping:
    machine: Machine
    populations: dict                       # name -> size
    projections: list
    slices: list
    quantised: dict                         # projection name -> Quantised
    tables: dict = field(default_factory=dict)   # chip -> list of (key, mask, target cores)
    delay_extensions: list = field(default_factory=list)   # DelayExtension per long-delay source

    @property
    def n_cores(self) -> int:
        """Neuron cores (one per slice); delay-extension cores are :attr:`n_delay_cores`."""
        return len(self.slices)

    @property
    def n_delay_cores(self) -> int:
        return len(self.delay_extensions)

    @property
    def n_chips(self) -> int:
        return 1 + max([s.chip for s in self.slices] + [d.chip for d in self.delay_extensions],
                       default=0)

    def core_of(self, population: str) -> np.ndarray:
        """Global core index of every neuron of ``population``."""
        n = self.populations[population]
        out = np.empty(n, dtype=np.int64)
        for i, s in enumerate(self.slices):
            if s.population == population:
                out[s.start:s.stop] = i
        return out


def map_network(populations: dict, projections: list, machine: Machine = SPINNAKER2
                ) -> Mapping:
    """Partition ``populations`` (name -> neuron count) with ``projections`` onto ``machine``."""
    fan_in = {p: np.zeros(n, dtype=np.int64) for p, n in populations.items()}
    for pr in projections:
        if pr.pre not in populations or pr.post not in populations:
            raise ValueError(f"projection {pr.name!r} joins unknown populations "
                             f"{pr.pre!r} -> {pr.post!r}")
        np.add.at(fan_in[pr.post], pr.post_idx, 1)
    max_syn = machine.synapse_bytes_per_core // machine.bytes_per_synapse
    slices = []
    for pop, n in populations.items():
        cum = np.concatenate([[0], np.cumsum(fan_in[pop])])
        start = 0
        while start < n:
            stop = min(start + machine.neurons_per_core, n)
            # shrink until the incoming synapses fit the core's synapse memory
            fit = int(np.searchsorted(cum, cum[start] + max_syn, side="right")) - 1
            stop = max(start + 1, min(stop, fit))
            if cum[stop] - cum[start] > max_syn:
                raise ValueError(f"population {pop!r}: neuron {start} alone has "
                                 f"{cum[stop] - cum[start]} synapses, more than a core holds "
                                 f"({max_syn})")
            k = len(slices)
            slices.append(Slice(pop, start, stop, k // machine.cores_per_chip,
                                k % machine.cores_per_chip, k << machine.key_shift,
                                (0xFFFFFFFF << machine.key_shift) & 0xFFFFFFFF))
            start = stop
    if machine.neurons_per_core > (1 << machine.key_shift):
        raise ValueError("key_shift leaves too few bits for the neurons of a core")
    m = Mapping(machine, dict(populations), list(projections), slices,
                {pr.name: quantise(pr.weight, machine.weight_bits) for pr in projections})
    m.delay_extensions = _delay_extensions(slices, projections, machine)
    if (m.n_cores + m.n_delay_cores - 1) >> (32 - machine.key_shift):
        raise ValueError(f"{m.n_cores + m.n_delay_cores} cores need more than the "
                         f"{32 - machine.key_shift} key bits left by key_shift "
                         f"{machine.key_shift}")
    m.tables = routing_tables(m)
    return m


def _delay_extensions(slices, projections, machine: Machine) -> list:
    """One :class:`DelayExtension` per source slice with synapses longer than
    ``max_delay_steps``, placed on the cores after the neuron cores."""
    if machine.max_delay_steps < 1:
        raise ValueError(f"max_delay_steps must be >= 1, got {machine.max_delay_steps}")
    long = {}                             # source population -> (neuron, stage) arrays
    for pr in projections:
        d = np.asarray(pr.delay, dtype=np.int64)
        sel = d > machine.max_delay_steps
        if sel.any():
            long.setdefault(pr.pre, []).append((pr.pre_idx[sel],
                                                (d[sel] - 1) // machine.max_delay_steps))
    long = {p: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v]))
            for p, v in long.items()}
    out, k = [], len(slices)
    for idx, s in enumerate(slices):
        if s.population not in long:
            continue
        pre, stage = long[s.population]
        inside = (pre >= s.start) & (pre < s.stop)
        if not inside.any():
            continue
        need = np.zeros((s.stop - s.start, int(stage[inside].max())), dtype=bool)
        need[pre[inside] - s.start, stage[inside] - 1] = True
        out.append(DelayExtension(idx, k // machine.cores_per_chip, k % machine.cores_per_chip,
                                  need))
        k += 1
    return out


def routing_tables(m: Mapping) -> dict:
    """Per chip: entries (key, mask, sorted target cores on that chip), one per source core
    with a target on the chip. A source slice's entry lists the neuron cores it reaches with
    delays up to ``max_delay_steps`` and its delay-extension core; a delay-extension core (core
    ``n_cores + j``, key ``(n_cores + j) << key_shift``) has its own entries to the neuron cores
    of the longer synapses, as in sPyNNaker."""
    tables: dict = {}
    core_of = {p: m.core_of(p) for p in m.populations}
    n_all = m.n_cores + m.n_delay_cores
    ext_of = np.full(m.n_cores, -1, dtype=np.int64)       # source slice -> its delay core
    for j, ext in enumerate(m.delay_extensions):
        ext_of[ext.source] = m.n_cores + j
    pairs = []
    for pr in m.projections:          # (source core, target core) pairs, vectorised
        pre, post = core_of[pr.pre][pr.pre_idx], core_of[pr.post][pr.post_idx]
        long = np.asarray(pr.delay) > m.machine.max_delay_steps
        pairs.append(np.unique(pre[~long] * n_all + post[~long]))
        if long.any():
            ext = ext_of[pre[long]]
            pairs += [np.unique(pre[long] * n_all + ext), np.unique(ext * n_all + post[long])]
    pairs = np.unique(np.concatenate(pairs)) if pairs else np.zeros(0, np.int64)
    src, dst = pairs // n_all, pairs % n_all
    chips = np.array([sl.chip for sl in m.slices] + [d.chip for d in m.delay_extensions],
                     dtype=np.int64)
    chip = chips[dst] if pairs.size else dst
    order = np.lexsort((dst, chip, src))
    src, dst, chip = src[order], dst[order], chip[order]
    bounds = np.flatnonzero(np.diff(src * (chip.max(initial=0) + 1) + chip)) + 1
    mask = (0xFFFFFFFF << m.machine.key_shift) & 0xFFFFFFFF
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, src.size]):
        if lo == hi:
            continue
        k = int(src[lo])
        key, msk = ((m.slices[k].key, m.slices[k].mask) if k < m.n_cores
                    else (k << m.machine.key_shift, mask))
        tables.setdefault(int(chip[lo]), []).append((key, msk,
                                                     tuple(int(c) for c in dst[lo:hi])))
    for chip, entries in tables.items():
        if len(entries) > m.machine.routing_entries:
            raise ValueError(f"chip {chip}: {len(entries)} routing entries, more than the "
                             f"{m.machine.routing_entries} its router holds")
    return tables


def reached_cores(m: Mapping, key: int) -> set:
    """Neuron cores a packet with ``key`` reaches through the tables: the cores it matches,
    and, for a delay-extension core among them, the cores its own key matches (its delayed
    re-sends)."""
    reached, todo, seen = set(), [key], set()
    while todo:
        k = todo.pop()
        for entries in m.tables.values():
            for ek, mask, cores in entries:
                if k & mask == ek:
                    for c in cores:
                        if c < m.n_cores:
                            reached.add(c)
                        elif c not in seen:
                            seen.add(c)
                            todo.append(c << m.machine.key_shift)
    return reached


def route(m: Mapping, population: str, neuron: int) -> set:
    """Neuron cores a spike of ``neuron`` reaches through the tables (key match on every chip,
    directly or through its slice's delay-extension core)."""
    s = next(s for s in m.slices if s.population == population and s.start <= neuron < s.stop)
    return reached_cores(m, s.key | (neuron - s.start))


@dataclass(frozen=True)
class ExecutionProfile:
    synaptic_events: np.ndarray          # [T, cores]
    neuron_updates: np.ndarray           # [T, cores]
    packets_sent: np.ndarray             # [T, cores]
    packets_received: np.ndarray         # [T, cores]
    cycles: np.ndarray                   # [T, cores]
    load: np.ndarray                     # [T, cores] cycles / budget
    real_time: bool
    energy_j: dict
    # delay-extension cores (Mapping.delay_extensions), [T, n_delay_cores] each: packets
    # "received" and "sent", "cycles", "load"; empty when the mapping has none
    delay_cores: dict = field(default_factory=dict)

    @property
    def total_energy_j(self) -> float:
        return float(sum(self.energy_j.values()))


def execution_profile(m: Mapping, spikes: dict) -> ExecutionProfile:
    """Per core and step counts, cycles, load and energy from ``spikes`` (population -> bool
    array ``[T, n]``); populations without spikes given (e.g. inputs) emit none."""
    import scipy.sparse as sp

    mach = m.machine
    t_steps = max(np.asarray(v).shape[0] for v in spikes.values())
    n_cores = m.n_cores
    ev = np.zeros((t_steps, n_cores))
    sent = np.zeros((t_steps, n_cores))
    recv = np.zeros((t_steps, n_cores))
    core_of = {p: m.core_of(p) for p in m.populations}
    for pop, s in spikes.items():
        s = np.asarray(s, dtype=np.float64)
        if s.shape[1] != m.populations[pop]:
            raise ValueError(f"spikes[{pop!r}] has {s.shape[1]} neurons, expected "
                             f"{m.populations[pop]}")
        src = sp.csr_matrix((np.ones(s.shape[1]), (np.arange(s.shape[1]), core_of[pop])),
                            shape=(s.shape[1], n_cores))
        s_sp = sp.csr_matrix(s)
        sent[: s.shape[0]] += (s_sp @ src).toarray()
        reach = sp.csr_matrix((s.shape[1], n_cores))
        for pr in m.projections:
            if pr.pre != pop:
                continue
            syn = sp.csr_matrix((np.ones(pr.pre_idx.size),
                                 (pr.pre_idx, core_of[pr.post][pr.post_idx])),
                                shape=(s.shape[1], n_cores))
            ev[: s.shape[0]] += (s_sp @ syn).toarray()
            reach = reach + syn
        recv[: s.shape[0]] += (s_sp @ (reach > 0).astype(np.float64)).toarray()
    upd = np.array([sl.stop - sl.start for sl in m.slices], dtype=np.float64)
    upd = np.broadcast_to(upd, (t_steps, n_cores)).copy()
    cycles = ev * mach.cycles_per_synaptic_event + upd * mach.cycles_per_neuron_update
    load = cycles / (mach.clock_hz * mach.time_step_s)
    duration = t_steps * mach.time_step_s
    energy = {"synaptic events": float(ev.sum()) * mach.e_synaptic_event_j,
              "neuron updates": float(upd.sum()) * mach.e_neuron_update_j,
              "packets": float(sent.sum()) * mach.e_packet_j,
              "idle": mach.p_idle_core_w * n_cores * duration}
    delay = _delay_core_profile(m, spikes, t_steps)
    real_time = bool((load <= 1).all())
    if delay:
        energy["delay-extension packets"] = float(delay["sent"].sum()) * mach.e_packet_j
        energy["idle"] += mach.p_idle_core_w * m.n_delay_cores * duration
        real_time = real_time and bool((delay["load"] <= 1).all())
    return ExecutionProfile(ev, upd, sent, recv, cycles, load, real_time, energy, delay)


def _delay_core_profile(m: Mapping, spikes: dict, t_steps: int) -> dict:
    """Per step and delay-extension core: packets received (the source slice's spikes), sent
    (each spike again at every stage its neuron needs, inside the run), cycles and load."""
    if not m.delay_extensions:
        return {}
    mach, n = m.machine, m.n_delay_cores
    out = {k: np.zeros((t_steps, n)) for k in ("received", "sent")}
    cycles = np.zeros((t_steps, n))
    for j, ext in enumerate(m.delay_extensions):
        s = m.slices[ext.source]
        cycles[:, j] = mach.cycles_per_delay_neuron * (s.stop - s.start)
        if s.population not in spikes:
            continue
        sp = np.asarray(spikes[s.population])[:, s.start:s.stop].astype(np.float64)
        out["received"][: sp.shape[0], j] = sp.sum(1)
        for stage in range(ext.stages.shape[1]):
            lag = (stage + 1) * mach.max_delay_steps
            if lag < t_steps:
                per = sp[:, ext.stages[:, stage]].sum(1)[: t_steps - lag]
                out["sent"][lag:lag + per.size, j] += per
    out["cycles"] = cycles
    out["load"] = cycles / (mach.clock_hz * mach.time_step_s)
    return out


def unroll_conv(layer, in_shape) -> tuple:
    """A Conv1d/Conv2d (``groups=1``) on a per-sample input of ``in_shape`` ``(C, ...)`` as
    sparse synapses: ``(pre, post, weight, out_shape)`` with flattened (C, H, W) indices, one
    synapse per (output position, kernel tap) that falls inside the input (zero padding has no
    synapse). Weights are the kernel's values, shared taps repeated."""
    import torch
    from torch import nn

    if not isinstance(layer, (nn.Conv1d, nn.Conv2d)) or layer.groups != 1 or (
            layer.padding_mode != "zeros"):
        raise TypeError(f"{type(layer).__name__}: only Conv1d / Conv2d with groups=1 and zero "
                        f"padding can be unrolled into synapses")
    two = isinstance(layer, nn.Conv2d)
    c, *sp = in_shape
    shape2 = (c, *sp) if two else (c, 1, sp[0])
    idx = torch.arange(1, int(np.prod(shape2)) + 1, dtype=torch.float64).reshape(1, *shape2)

    def pair(v):
        return tuple(v) if two else (1, v[0])
    cols = nn.functional.unfold(idx, pair(layer.kernel_size), dilation=pair(layer.dilation),
                                padding=pair(layer.padding), stride=pair(layer.stride))[0]
    cols = cols.long() - 1                                       # [C*K, L], -1 = padding
    w = layer.weight.detach().double().reshape(layer.out_channels, -1)      # [O, C*K]
    n_pos = cols.shape[1]
    o, k, pos = np.meshgrid(np.arange(w.shape[0]), np.arange(w.shape[1]), np.arange(n_pos),
                            indexing="ij")
    pre = cols.numpy()[k, pos]
    ok = (pre >= 0) & (w.numpy()[o, k] != 0)
    with torch.no_grad():
        out_shape = tuple(layer(torch.zeros(1, *in_shape, dtype=layer.weight.dtype)).shape[1:])
    return (pre[ok], (o * n_pos + pos)[ok], w.numpy()[o, k][ok], out_shape)


def unroll_pool(layer, in_shape) -> tuple:
    """An ``nn.AvgPool2d`` (also :class:`spiking.SumPool2d`, ``divisor_override=1``) on a
    per-sample input of ``in_shape`` ``(C, H, W)`` as fixed-weight sparse synapses, like
    :func:`unroll_conv`: ``(pre, post, weight, out_shape)`` with one synapse per (output
    position, window tap inside the input) from the same channel, of weight ``1 / divisor``
    (the window size, the number of taps inside the input for ``count_include_pad=False``,
    or ``divisor_override``: 1 for a sum). Max pooling is not linear and has no such form."""
    import torch
    from torch import nn

    if not isinstance(layer, nn.AvgPool2d) or layer.ceil_mode or len(in_shape) != 3:
        raise TypeError(f"{type(layer).__name__}: only AvgPool2d / SumPool2d (ceil_mode=False) "
                        f"on (C, H, W) inputs can be unrolled into synapses (max pooling has no "
                        f"synaptic form)")

    def pair(v):
        return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v), int(v))
    k = pair(layer.kernel_size)
    stride = pair(layer.stride if layer.stride is not None else layer.kernel_size)
    c, h, w = (int(i) for i in in_shape)
    idx = torch.arange(1, c * h * w + 1, dtype=torch.float64).reshape(c, 1, h, w)
    cols = nn.functional.unfold(idx, k, padding=pair(layer.padding), stride=stride)
    cols = cols.long().numpy() - 1                               # [C, K, L], -1 = padding
    n_pos = cols.shape[2]
    ch = np.broadcast_to(np.arange(c)[:, None, None], cols.shape)
    pos = np.broadcast_to(np.arange(n_pos)[None, None, :], cols.shape)
    ok = cols >= 0
    if layer.divisor_override is not None:
        div = np.full(cols.shape, float(layer.divisor_override))
    elif layer.count_include_pad:
        div = np.full(cols.shape, float(k[0] * k[1]))
    else:
        div = np.broadcast_to(ok.sum(1, keepdims=True), cols.shape).astype(np.float64)
    with torch.no_grad():
        out_shape = tuple(layer(torch.zeros(1, *in_shape, dtype=torch.float64)).shape[1:])
    return cols[ok], (ch * n_pos + pos)[ok], 1.0 / div[ok], out_shape


def _as_sparse(w, n_in: int):
    """A projection's synapses as a scipy CSR matrix ``[n_out, n_in]``."""
    import scipy.sparse as sp

    if isinstance(w, tuple):
        pre, post, wv, out_shape = w
        return sp.csr_matrix((wv, (post, pre)), shape=(int(np.prod(out_shape)), n_in))
    return sp.csr_matrix(w.detach().cpu().double().numpy())


def network_from_model(model, example):
    """Populations, projections and recorded spikes of a :class:`spiking.Sequential` of
    Linear / Conv1d / Conv2d / AvgPool2d / SumPool2d layers, neurons and
    :class:`~spiking.models.recurrent.Recurrent` layers (a model with a ``to_sequential()``
    method, e.g. :class:`~spiking.models.csnn.CSNN`, is mapped as the stack it returns).

    Returns ``(populations, projections, spikes)``: ``"input"`` is the flattened input, each
    neuron layer a population; a Linear between populations is a projection (delay 1 step), a
    :class:`~spiking.models.delays.DelayedLinear` one whose tap ``k`` synapses have delay
    ``1 + (K-1-k) d`` steps, a
    convolution is unrolled into its synapses (:func:`unroll_conv`); a Recurrent adds its
    input and recurrent projections. Average / sum pooling is a fixed-weight projection
    (:func:`unroll_pool`) composed with the weight layer before or after it into one
    projection (``"...:1+2"`` names the layers), since only populations send spikes: a conv5
    followed by a 2x2 average pool becomes 6x6 synapses of stride 2 per pooled neuron.
    ``spikes`` maps each population to its activity ``[T, n]`` of the first sample of
    ``example`` (non-zero = spike)."""
    import torch
    from torch import nn

    from spiking.models.delays import DelayedLinear
    from spiking.models.recurrent import Recurrent
    from spiking.neurons.base import Neuron
    from spiking.sequential import Sequential

    if not isinstance(model, Sequential) and hasattr(model, "to_sequential"):
        model = model.to_sequential()
    if not isinstance(model, Sequential):
        raise TypeError(f"the SpiNNaker-like mapping takes a spiking.Sequential of Linear, Conv1d, "
                        f"Conv2d, AvgPool2d, SumPool2d, neuron and Recurrent layers; a "
                        f"{type(model).__name__} with its own forward (max pooling, dropout, "
                        f"custom code) and no to_sequential() has no mapping")
    with torch.no_grad():
        _, _, outs = model(example, record=True)
    populations = {"input": int(np.prod(example.shape[2:]))}
    spikes = {"input": (example[:, 0].reshape(example.shape[0], -1) != 0).cpu().numpy()}
    projections, pending, prev = [], [], "input"
    in_shapes = [tuple(example.shape[2:])] + [tuple(o.shape[2:]) for o in outs]

    def add(name, w, pre, post):
        delay = None
        if isinstance(w, DelayedLinear):               # taps = synapses with extra delays
            pre_i, post_i, wv, lag = w.synapses()
            n_pre, n_post = populations[pre], populations[post]
            delay = 1 + lag
        elif isinstance(w, tuple):                     # unrolled convolution
            pre_i, post_i, wv, _ = w
            n_pre, n_post = populations[pre], populations[post]
        else:
            w = w.detach().cpu().double().numpy()
            post_i, pre_i = np.nonzero(w)
            wv, n_pre, n_post = w[post_i, pre_i], w.shape[1], w.shape[0]
        delay = np.ones(pre_i.size) if delay is None else delay
        projections.append(Projection(name, pre, post, n_pre, n_post, pre_i, post_i, wv,
                                      delay.astype(np.int16)))

    def compose(items):
        """One projection's synapses from a chain of linear maps (applied in order)."""
        mat = None
        for _, w, n_in, _ in items:
            m_ = _as_sparse(w, n_in)
            mat = m_ if mat is None else m_ @ mat
        mat = mat.tocoo()
        keep = mat.data != 0
        return (mat.col[keep].astype(np.int64), mat.row[keep].astype(np.int64),
                mat.data[keep].astype(np.float64), (mat.shape[0],))

    for i, (layer, out) in enumerate(zip(model, outs)):
        shape = in_shapes[i]
        n_in = int(np.prod(shape))
        if isinstance(layer, nn.Linear):
            pending.append((f"{i}", layer.weight, n_in, True))
            continue
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            pending.append((f"{i}", unroll_conv(layer, shape), n_in, True))
            continue
        if isinstance(layer, nn.AvgPool2d):
            pending.append((f"{i}", unroll_pool(layer, shape), n_in, False))
            continue
        if isinstance(layer, DelayedLinear):
            pending.append((f"{i}", layer, n_in, True))
            continue
        if isinstance(layer, (nn.Flatten, nn.Identity, nn.Dropout)):
            continue
        if not isinstance(layer, (Neuron, Recurrent)):
            raise TypeError(f"layer {i} ({type(layer).__name__}) cannot be mapped; supported: "
                            f"Linear, Conv1d, Conv2d, AvgPool2d, SumPool2d, Flatten, neurons, "
                            f"Recurrent (max pooling between spiking layers has no synaptic "
                            f"form)")
        name = f"pop{i}"
        populations[name] = int(np.prod(out.shape[2:]))
        spikes[name] = (out[:, 0].reshape(out.shape[0], -1) != 0).cpu().numpy()
        if sum(p[3] for p in pending) > 1:
            raise TypeError(f"layer {i}: two weight layers in a row cannot be mapped")
        if len(pending) > 1 and any(isinstance(p[1], DelayedLinear) for p in pending):
            raise TypeError(f"layer {i}: a DelayedLinear composed with pooling cannot be mapped")
        if len(pending) == 1:
            add(f"{prev}->{name}:{pending[0][0]}", pending[0][1], prev, name)
        elif pending:
            add(f"{prev}->{name}:{'+'.join(p[0] for p in pending)}", compose(pending), prev,
                name)
        pending = []
        if isinstance(layer, Recurrent):
            if layer.input is not None:
                add(f"{prev}->{name}:input", layer.input.weight, prev, name)
            if layer.recurrent_kind == "dense":
                add(f"{name}->{name}:recurrent", layer.recurrent.weight, name, name)
        prev = name
    return populations, projections, spikes
