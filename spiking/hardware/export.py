r"""NIR export and import (Pedersen et al. 2024, "Neuromorphic intermediate representation",
Nat. Commun.; the ``nir`` package defines each node's continuous-time equations).

One mapping ``{module type: to_nir}`` and its inverse. NIR's neurons are ODEs; ours are their
discretisations (:mod:`spiking.kernels.lif`). For a LIF with decay ``a`` and input gain ``g``
(``h = a v + (1 - a) v_leak + g x``), NIR's LIF ``tau dv/dt = (v_leak - v) + r I`` gives

- ``discretization="exp"`` (zero-order hold, exact for a constant input over a step):
  ``a = exp(-dt/tau)`` and ``(1 - a) r = g``, so ``r = g / (1 - a)``;
- ``discretization="euler"``: ``a = 1 - dt/tau`` and ``(dt/tau) r = g``, so ``r = g tau / dt``
  (``r = tau/dt`` without input normalisation: snnTorch's NIR convention).

``tau = tau_mem``, ``v_threshold = threshold``, ``v_leak``, ``v_reset`` as they are. CubaLIF's
current ``tau_syn dI/dt = -I + w_in S`` maps the same way: ``w_in = 1/(1 - a_syn)`` (exp) or
``tau_syn/dt`` (Euler), so that ``I`` equals our ``i``. LI -> ``LI`` (``CubaLI`` with a synapse).
Linear -> ``Affine`` (``Linear`` without bias), Conv1d/2d -> ``Conv1d``/``Conv2d``, Flatten ->
``Flatten`` (NIR shapes exclude the batch: ``start_dim - 1``), ``nn.AvgPool2d`` -> ``AvgPool2d``
(zero padding counted in the window, NIR's and torch's default), :class:`spiking.SumPool2d`
(``AvgPool2d`` with ``divisor_override=1``) -> ``SumPool2d``; max pooling has no NIR node. A
model with a ``to_sequential()`` method (:class:`~spiking.models.csnn.CSNN`) is exported as the
stack that method returns. A
:class:`~spiking.models.recurrent.Recurrent` -> its input ``Affine`` followed by a subgraph
``input -> LIF -> output`` with the recurrent edge ``LIF -> W_rec -> LIF`` (snnTorch's RLeaky
layout). A :class:`~spiking.models.delays.DelayedLinear` (K taps ``d`` steps apart) -> K
parallel branches ``Delay((K-1-k) d dt) -> Linear(W[:, :, k])`` that all feed the next node
(NIR sums a node's inputs; the zero-delay tap has no ``Delay`` and carries the bias as an
``Affine``); ``dt`` is the neighbouring neuron layer's. The import takes any group of parallel
branches of at most one ``Delay`` and one ``Linear``/``Affine`` (either order: per-input or
per-output delays, or a direct edge) joining one node, with delays whole multiples of ``dt``,
and sums them into one ``DelayedLinear`` (taps at the delays' greatest common divisor). What
NIR cannot express is kept in each node's ``metadata`` under ``spiking_*`` keys
(discretisation, ``dt``, reset kind — NIR resets to ``v_reset``, our ``subtract`` reset is not
expressible —, reset delay, current ordering, ALIF adaptation, surrogate); partitions and
quantisation go to a JSON sidecar (``write_nir(..., sidecar=...)``). :func:`from_nir` reads
the metadata back, so ``module -> NIR -> file -> module`` gives identical outputs; graphs from
other tools (no metadata) are read with Euler discretisation and ``dt`` given by the caller.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

import spiking
from spiking.kernels import common
from spiking.models.recurrent import Recurrent
from spiking.pooling import SumPool2d

META_VERSION = 1


def _arr(t, shape) -> np.ndarray:
    a = torch.as_tensor(t).detach().to(torch.float64).cpu().numpy()
    return np.broadcast_to(a, shape).copy()


def _gain_decay(neuron, tau, dt):
    a = common.decay(dt, torch.as_tensor(tau, dtype=torch.float64).clamp_min(1e-300),
                     neuron.discretization)
    g = (1 - a) if neuron.normalize_input else torch.ones_like(a)
    return a, g


def _r(neuron, tau, dt, shape):
    a, g = _gain_decay(neuron, tau, dt)
    if neuron.discretization == "exp":
        r = torch.where(a < 1, g / (1 - a).clamp_min(1e-300), torch.full_like(a, np.inf))
    else:
        r = g * torch.as_tensor(tau, dtype=torch.float64) / dt
    return _arr(r, shape)


def _w_in(neuron, tau_syn, dt, shape):
    a = common.decay(dt, torch.as_tensor(tau_syn, dtype=torch.float64), neuron.discretization)
    w = 1 / (1 - a) if neuron.discretization == "exp" else torch.as_tensor(
        tau_syn, dtype=torch.float64) / dt
    return _arr(w, shape)


def _neuron_meta(m, shape) -> dict:
    meta = {"spiking_version": META_VERSION, "spiking_kind": type(m).__name__,
            "spiking_dt": float(m.dt), "spiking_discretization": m.discretization,
            "spiking_normalize_input": int(m.normalize_input)}
    if hasattr(m, "reset"):
        meta.update(spiking_reset=m.reset, spiking_reset_delay=int(m.reset_delay),
                    spiking_current_first=int(m.current_first),
                    spiking_surrogate=m.surrogate.name,
                    spiking_surrogate_alpha=float(m.surrogate.alpha))
        if m.tau_adapt is not None:
            meta["spiking_tau_adapt"] = np.atleast_1d(_arr(m.tau_adapt, shape))
            meta["spiking_adapt_jump"] = np.atleast_1d(_arr(m.adapt_jump, shape))
    return meta


def _neuron_to_nir(m, shape):
    import nir

    dt, meta = m.dt, _neuron_meta(m, shape)
    vleak = _arr(m.v_leak, shape)
    if isinstance(m, spiking.LI):
        if m.tau_syn is None:
            return nir.LI(tau=_arr(m.tau_mem, shape), r=_r(m, m.tau_mem, dt, shape),
                          v_leak=vleak, metadata=meta)
        return nir.CubaLI(tau_syn=_arr(m.tau_syn, shape), tau_mem=_arr(m.tau_mem, shape),
                          r=_r(m, m.tau_mem, dt, shape), v_leak=vleak,
                          w_in=_w_in(m, m.tau_syn, dt, shape), metadata=meta)
    common_kw = {"v_threshold": _arr(m.threshold, shape), "v_leak": vleak,
                     "v_reset": _arr(m.v_reset, shape), "metadata": meta}
    if m.tau_syn is None:
        return nir.LIF(tau=_arr(m.tau_mem, shape), r=_r(m, m.tau_mem, dt, shape), **common_kw)
    return nir.CubaLIF(tau_syn=_arr(m.tau_syn, shape), tau_mem=_arr(m.tau_mem, shape),
                       r=_r(m, m.tau_mem, dt, shape), w_in=_w_in(m, m.tau_syn, dt, shape),
                       **common_kw)


def _linear_to_nir(m: nn.Linear, meta=None):
    import nir

    w = m.weight.detach().cpu().numpy()
    if m.bias is None:
        return nir.Linear(weight=w, metadata=meta or {})
    return nir.Affine(weight=w, bias=m.bias.detach().cpu().numpy(), metadata=meta or {})


def _conv_to_nir(m, in_shape):
    import nir

    cls = nir.Conv2d if isinstance(m, nn.Conv2d) else nir.Conv1d
    spatial = tuple(in_shape[1:]) if isinstance(m, nn.Conv2d) else int(in_shape[1])
    one = (lambda v: v[0]) if isinstance(m, nn.Conv1d) else tuple
    bias = (m.bias.detach().cpu().numpy() if m.bias is not None
            else np.zeros(m.out_channels, dtype=m.weight.detach().cpu().numpy().dtype))
    return cls(input_shape=spatial, weight=m.weight.detach().cpu().numpy(),
               stride=one(m.stride), padding=one(m.padding), dilation=one(m.dilation),
               groups=m.groups, bias=bias, metadata={"spiking_bias": int(m.bias is not None)})


def _pair(v) -> tuple:
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _pool_to_nir(m: nn.AvgPool2d):
    import nir

    if m.ceil_mode:
        raise TypeError("to_nir: AvgPool2d with ceil_mode=True has no NIR equivalent")
    k = _pair(m.kernel_size)
    s = _pair(m.stride if m.stride is not None else m.kernel_size)
    p = _pair(m.padding)
    kw = {"kernel_size": np.array(k), "stride": np.array(s), "padding": np.array(p)}
    if m.divisor_override == 1:
        return nir.SumPool2d(**kw)
    if m.divisor_override is not None or (any(p) and not m.count_include_pad):
        raise TypeError(f"to_nir: {m} has no NIR equivalent (NIR's AvgPool2d divides by the "
                        f"window size; divisor_override 1 is SumPool2d)")
    return nir.AvgPool2d(**kw)


def _recurrent_to_nir(m: Recurrent, shape):
    import nir

    if m.recurrent_kind != "dense":
        w_rec = np.diag(_arr(m.recurrent_weight, shape)).astype(np.float32)
        b_rec = None if m.recurrent_bias is None else m.recurrent_bias.detach().numpy()
    else:
        w = m.recurrent.weight.detach()
        if not m.autapses:
            w = w * m._autapse_mask
        w_rec = w.cpu().numpy()
        b_rec = None if m.recurrent.bias is None else m.recurrent.bias.detach().cpu().numpy()
    rec = (nir.Linear(weight=w_rec) if b_rec is None else nir.Affine(weight=w_rec, bias=b_rec))
    nodes = {"input": nir.Input(input_type=np.array(shape)),
             "lif": _neuron_to_nir(m.neuron, shape), "w_rec": rec,
             "output": nir.Output(output_type=np.array(shape))}
    edges = [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata={"spiking_kind": "Recurrent",
                                  "spiking_recurrent": m.recurrent_kind})


_NEURONS = (spiking.LIF, spiking.CubaLIF, spiking.ALIF, spiking.LI)


def _stack_dt(layers, i: int) -> float:
    """``dt`` of the neuron layer nearest after layer ``i`` (else before it): the step a
    :class:`~spiking.models.delays.DelayedLinear`'s delays are counted in."""
    order = list(range(i + 1, len(layers))) + list(range(i - 1, -1, -1))
    for j in order:
        m = layers[j].neuron if isinstance(layers[j], Recurrent) else layers[j]
        if isinstance(m, _NEURONS):
            return float(m.dt)
    raise ValueError(f"to_nir: layer {i} (DelayedLinear) needs a neuron layer in the stack: its "
                     f"delays are steps and NIR's Delay takes seconds (the neurons' dt)")


def _delayed_to_nir(m, name: str, dt: float) -> tuple[dict, list, list]:
    """A :class:`~spiking.models.delays.DelayedLinear` as K parallel branches ``input ->
    Delay((K-1-k) d dt) -> Linear(W[:, :, k])`` (the zero-delay tap without a Delay node and
    with the bias, as an ``Affine``) that all feed the next node, where NIR sums them.
    Returns ``(nodes, edges inside, entry and exit node pairs)``."""
    import nir

    w = m.conv.weight.detach().cpu().numpy()                          # [O, I, K]
    bias = None if m.conv.bias is None else m.conv.bias.detach().cpu().numpy()
    nodes, edges, ends = {}, [], []
    for k in range(m.taps):
        lag = (m.taps - 1 - k) * m.spacing
        meta = {"spiking_kind": "DelayedLinear", "spiking_delay_steps": lag, "spiking_dt": dt}
        tap = f"{name}_tap{k}"
        wk = np.ascontiguousarray(w[:, :, k])
        nodes[tap] = (nir.Affine(weight=wk, bias=bias, metadata=meta)
                      if lag == 0 and bias is not None else nir.Linear(weight=wk, metadata=meta))
        if lag == 0:
            ends.append((tap, tap))
            continue
        delay = f"{name}_delay{k}"
        nodes[delay] = nir.Delay(delay=np.full(w.shape[1], lag * dt), metadata=dict(meta))
        edges.append((delay, tap))
        ends.append((delay, tap))
    return nodes, edges, ends


def to_nir(model: nn.Module, example: torch.Tensor):
    """A ``nir.NIRGraph`` of ``model`` (a :class:`spiking.Sequential`, a single layer, or a
    model with a ``to_sequential()`` method, which is called first).

    ``example`` is one input ``[T, B, ...]``; it fixes every layer's shape (NIR nodes carry
    shapes without the batch)."""
    import nir

    from spiking.models.delays import DelayedLinear

    single = (Recurrent, nn.Linear, nn.Conv1d, nn.Conv2d, nn.Flatten, nn.AvgPool2d,
              DelayedLinear, *_NEURONS)
    if not isinstance(model, (nn.Sequential, *single)) and hasattr(model, "to_sequential"):
        model = model.to_sequential()
    if not isinstance(model, (nn.Sequential, *single)):
        raise TypeError(f"to_nir: a {type(model).__name__} is not a layer stack; NIR export takes "
                        f"a spiking.Sequential of Linear, DelayedLinear, Conv1d, Conv2d, "
                        f"AvgPool2d, SumPool2d, Flatten, LIF, CubaLIF, ALIF, LI and Recurrent "
                        f"layers (NIR has no node for custom forward code, max pooling or "
                        f"dropout)")
    layers = list(model) if isinstance(model, nn.Sequential) else [model]
    seq = model if isinstance(model, spiking.Sequential) else spiking.Sequential(*layers)
    with torch.no_grad():
        _, _, outs = seq(example, record=True)
    shapes = [tuple(example.shape[2:])] + [tuple(o.shape[2:]) for o in outs]
    nodes = {"input": nir.Input(input_type=np.array(shapes[0]))}
    edges, prevs = [], ["input"]          # the nodes feeding the next one (NIR sums them)
    for i, layer in enumerate(layers):
        in_shape, out_shape = shapes[i], shapes[i + 1]
        name = f"{i}"
        if isinstance(layer, DelayedLinear):
            branch_nodes, inner, ends = _delayed_to_nir(layer, name, _stack_dt(layers, i))
            nodes.update(branch_nodes)
            edges += [(p, first) for first, _ in ends for p in prevs] + inner
            prevs = [last for _, last in ends]
            continue
        if isinstance(layer, Recurrent):
            if layer.input is not None:
                nodes[f"{i}_in"] = _linear_to_nir(layer.input)
                edges += [(p, f"{i}_in") for p in prevs]
                prevs = [f"{i}_in"]
            node = _recurrent_to_nir(layer, out_shape)
        elif isinstance(layer, nn.Linear):
            node = _linear_to_nir(layer)
        elif isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            node = _conv_to_nir(layer, in_shape)
        elif isinstance(layer, nn.AvgPool2d):
            node = _pool_to_nir(layer)
        elif isinstance(layer, nn.Flatten):
            end = layer.end_dim if layer.end_dim < 0 else layer.end_dim - 1
            node = nir.Flatten(input_type={"input": np.array(in_shape)},
                               start_dim=layer.start_dim - 1, end_dim=end)
        elif isinstance(layer, _NEURONS):
            node = _neuron_to_nir(layer, out_shape)
        else:
            raise TypeError(f"to_nir: layer {i} of type {type(layer).__name__} has no NIR "
                             f"mapping; supported: Linear, Conv1d, Conv2d, AvgPool2d, "
                             f"SumPool2d, Flatten, LIF, CubaLIF, ALIF (as LIF + metadata), LI, "
                             f"Recurrent, DelayedLinear (as Delay + Linear branches)")
        nodes[name] = node
        edges += [(p, name) for p in prevs]
        prevs = [name]
    nodes["output"] = nir.Output(output_type=np.array(shapes[-1]))
    edges += [(p, "output") for p in prevs]
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata={"spiking_version": META_VERSION, "producer": "spiking"})


# ----------------------------------------------------------------------------- import
def _meta(node) -> dict:
    out = {}
    for k, v in (getattr(node, "metadata", None) or {}).items():
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.ndarray) and v.shape == () and v.dtype.kind in "SUO":
            v = v.item().decode() if isinstance(v.item(), bytes) else str(v.item())
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _neuron_from_nir(node, dt: float):
    import nir

    meta = _meta(node)
    dt = float(meta.get("spiking_dt", dt))
    disc = meta.get("spiking_discretization", "euler")
    norm = bool(meta.get("spiking_normalize_input", 0))
    tau = node.tau if isinstance(node, (nir.LI, nir.LIF)) else node.tau_mem
    # neurons of a multi-dimensional layer (after a convolution or pooling, [C, H, W]) keep
    # their parameters' shape, which broadcasts over [T, B, C, H, W]; vectors are [n_neurons]
    shaped = np.asarray(tau).ndim > 1

    def t64(a):
        t = torch.as_tensor(np.asarray(a), dtype=torch.float64)
        return t if shaped else t.flatten()
    n = None if shaped else t64(tau).numel()
    if isinstance(node, (nir.LI, nir.CubaLI)):
        v_leak = float(np.asarray(node.v_leak).flatten()[0])
        m = spiking.LI(tau_mem=t64(tau), dt=dt, n_neurons=n,
                       tau_syn=t64(node.tau_syn) if isinstance(node, nir.CubaLI) else None,
                       v_leak=v_leak, normalize_input=norm, discretization=disc)
        return m
    kw = {"threshold": t64(node.v_threshold), "dt": dt, "n_neurons": n, "discretization": disc,
              "normalize_input": norm, "v_leak": float(np.asarray(node.v_leak).flatten()[0]),
              "v_reset": float(np.asarray(node.v_reset).flatten()[0]),
              "reset": meta.get("spiking_reset", "zero"),
              "surrogate": meta.get("spiking_surrogate", "atan"),
              "surrogate_alpha": meta.get("spiking_surrogate_alpha")}
    kind = meta.get("spiking_kind")
    if kind == "ALIF":
        return spiking.ALIF(tau_mem=t64(tau), tau_adapt=t64(meta["spiking_tau_adapt"]),
                            adapt_jump=t64(meta["spiking_adapt_jump"]),
                            tau_syn=t64(node.tau_syn) if isinstance(node, nir.CubaLIF) else None,
                            current_first=bool(meta.get("spiking_current_first", 1)), **kw)
    kw["reset_delay"] = bool(meta.get("spiking_reset_delay", 0))
    if isinstance(node, nir.LIF):
        return spiking.LIF(tau_mem=t64(tau), **kw)
    return spiking.CubaLIF(tau_mem=t64(tau), tau_syn=t64(node.tau_syn),
                           current_first=bool(meta.get("spiking_current_first", 1)), **kw)


def _linear_from_nir(node) -> nn.Linear:
    w = torch.as_tensor(np.asarray(node.weight))
    bias = getattr(node, "bias", None)
    m = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, dtype=w.dtype)
    with torch.no_grad():
        m.weight.copy_(w)
        if bias is not None:
            m.bias.copy_(torch.as_tensor(np.asarray(bias)))
    return m


def _links(graph):
    succ, pred = {}, {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    return succ, pred


def _branches(graph, cur, succ, pred):
    """The parallel projections leaving ``cur`` that join one node: each branch is at most
    one ``Delay`` and at most one ``Linear``/``Affine`` (either order), or a direct edge.
    Returns ``(branches, join)``, each branch a list of node keys."""
    import nir

    def kind(key):
        node = graph.nodes[key]
        return ("delay" if isinstance(node, nir.Delay) else
                "weight" if isinstance(node, (nir.Linear, nir.Affine)) else None)

    branches, joins = [], set()
    for b in succ[cur]:
        path, k = [], b
        while kind(k) is not None and kind(k) not in {kind(p) for p in path}:
            if len(pred.get(k, [])) != 1 or len(succ.get(k, [])) != 1:
                raise ValueError(f"from_nir: node {k!r} (in parallel projections from {cur!r}) "
                                 f"has {len(pred.get(k, []))} inputs and "
                                 f"{len(succ.get(k, []))} outputs; expected one each")
            path.append(k)
            k = succ[k][0]
        branches.append(path)
        joins.add(k)
    if len(joins) != 1:
        raise ValueError(f"from_nir: the branches leaving node {cur!r} reach {sorted(joins)}; "
                         f"only parallel (delayed) projections that join one node are supported")
    join = joins.pop()
    feeding = sorted(p[-1] if p else cur for p in branches)
    if sorted(pred[join]) != feeding:
        raise ValueError(f"from_nir: node {join!r} has inputs {sorted(pred[join])}, expected "
                         f"only the branches from {cur!r} ({feeding})")
    return branches, join


def _chain(graph) -> list:
    """Node keys from the input to the output; a group of parallel or delayed projections
    (see :func:`_branches`) is one entry, a list of branches."""
    import nir

    succ, pred = _links(graph)
    start = next(k for k, v in graph.nodes.items() if type(v).__name__ == "Input")
    order, cur = [], start
    while True:
        nxt = succ.get(cur, [])
        if not nxt:
            return order
        if len(nxt) > 1 or isinstance(graph.nodes[nxt[0]], nir.Delay):
            branches, cur = _branches(graph, cur, succ, pred)
            order.append(branches)
        else:
            cur = nxt[0]
        if type(graph.nodes[cur]).__name__ == "Output":
            return order
        order.append(cur)


def _delay_steps(graph, key, dt: float) -> np.ndarray:
    """A ``Delay`` node's delays in whole steps (``spiking_delay_steps`` metadata when the graph
    is ours, else ``delay / dt``); a ValueError names a delay that is not a whole number of
    steps or is negative."""
    node, meta = graph.nodes[key], _meta(graph.nodes[key])
    delay = np.asarray(node.delay, dtype=np.float64).reshape(-1)
    if "spiking_delay_steps" in meta:
        return np.broadcast_to(np.asarray(meta["spiking_delay_steps"], dtype=np.int64),
                               delay.shape).copy()
    dt = float(meta.get("spiking_dt", dt))
    steps = delay / dt
    bad = (np.abs(steps - np.round(steps)) > 1e-6 * np.maximum(1.0, np.abs(steps))) | (
        steps < -1e-9)
    if bad.any():
        v = float(delay[np.argmax(bad)])
        raise ValueError(f"from_nir: Delay node {key!r} has delay {v!r} s, not a whole number "
                         f">= 0 of steps of dt = {dt!r} s (pass the graph's time step as dt)")
    return np.round(steps).astype(np.int64)


def _delayed_from_nir(graph, branches, key: str, dt: float) -> nn.Module:
    """Parallel branches (:func:`_branches`) summed into one projection: an ``nn.Linear`` when
    no delay is left, else a :class:`~spiking.models.delays.DelayedLinear` with taps ``d``
    apart, ``d`` the greatest common divisor of the delays (a delay before the weights is per
    input, after them per output; every (output, input, delay) weight goes to its tap)."""
    import math

    import nir

    from spiking.models.delays import DelayedLinear

    parts = []                            # (weight [O, I], lag [O, I] in steps, bias or None)
    for path in branches:
        w = bias = None
        lag_in = lag_out = 0
        for k in path:
            node = graph.nodes[k]
            if isinstance(node, nir.Delay):
                steps = _delay_steps(graph, k, dt)
                if w is None:
                    lag_in = steps[None, :]
                else:
                    lag_out = steps[:, None]
            else:
                w = np.asarray(node.weight, dtype=np.float64)
                bias = None if isinstance(node, nir.Linear) else np.asarray(node.bias)
        parts.append((w, lag_in, lag_out, bias))
    sizes = {w.shape for w, *_ in parts if w is not None}
    if not sizes:                         # delays only: identity weights
        widths = {np.size(a) for _, li, lo, _ in parts for a in (li, lo)
                  if isinstance(a, np.ndarray)}
        if len(widths) != 1:
            raise ValueError(f"from_nir: the Delay nodes before node {key!r} have sizes "
                             f"{sorted(widths)}; expected one size")
        n = widths.pop()
        sizes = {(n, n)}
    if len(sizes) != 1:
        raise ValueError(f"from_nir: parallel projections before node {key!r} have weight "
                         f"shapes {sorted(sizes)}; expected one shape")
    n_out, n_in = sizes.pop()
    full, bias = [], None
    for path, (w, lag_in, lag_out, b) in zip(branches, parts):
        w = np.eye(n_out, n_in) if w is None else w
        for lag, n, side in ((lag_in, n_in, "inputs"), (lag_out, n_out, "outputs")):
            if np.size(lag) not in (1, n):
                raise ValueError(f"from_nir: Delay in branch {path} before node {key!r} has "
                                 f"{np.size(lag)} delays, expected one per {side} ({n})")
        full.append((w, np.broadcast_to(lag_in + lag_out, (n_out, n_in))))
        if b is not None:
            bias = np.asarray(b, dtype=np.float64) + (0 if bias is None else bias)
    dtype = next((torch.as_tensor(np.asarray(graph.nodes[k].weight)).dtype for p in branches
                  for k in p if not isinstance(graph.nodes[k], nir.Delay)), torch.float32)
    spacing = math.gcd(*(int(v) for _, lag in full for v in np.unique(lag))) or 1
    taps = max(int(lag.max()) for _, lag in full) // spacing + 1
    weight = np.zeros((n_out, n_in, taps))
    rows, cols = np.indices((n_out, n_in))
    for w, lag in full:
        np.add.at(weight, (rows, cols, taps - 1 - lag // spacing), w)
    if taps == 1:
        m = nn.Linear(n_in, n_out, bias=bias is not None, dtype=dtype)
        weight = weight[:, :, 0]
    else:
        m = nn.Conv1d(n_in, n_out, taps, dilation=spacing, bias=bias is not None, dtype=dtype)
    with torch.no_grad():
        m.weight.copy_(torch.as_tensor(weight))
        if bias is not None:
            m.bias.copy_(torch.as_tensor(bias))
    return m if taps == 1 else DelayedLinear(m)


def from_nir(graph, *, dt: float = 1e-3) -> spiking.Sequential:
    """A :class:`spiking.Sequential` from a NIR graph (or a path to a ``.nir`` file)."""
    import nir

    if isinstance(graph, (str, Path)):
        if not Path(graph).is_file():
            raise FileNotFoundError(f"NIR file {graph} not found")
        graph = nir.read(str(graph))
    layers, chain = [], _chain(graph)
    for n, key in enumerate(chain):
        if isinstance(key, list):
            nxt = chain[n + 1] if n + 1 < len(chain) else "output"
            layers.append(_delayed_from_nir(graph, key, nxt, dt))
            continue
        node = graph.nodes[key]
        if isinstance(node, nir.NIRGraph):
            neuron_node = next(v for v in node.nodes.values()
                               if isinstance(v, (nir.LIF, nir.CubaLIF)))
            w = next(v for v in node.nodes.values() if isinstance(v, (nir.Linear, nir.Affine)))
            neuron = _neuron_from_nir(neuron_node, dt)
            hidden = np.asarray(w.weight).shape[0]
            rec = Recurrent(neuron, hidden_size=hidden,
                            recurrent_bias=isinstance(w, nir.Affine))
            lin = _linear_from_nir(w)
            with torch.no_grad():
                rec.recurrent.weight.copy_(lin.weight)
                if lin.bias is not None:
                    rec.recurrent.bias.copy_(lin.bias)
            layers.append(rec)
        elif isinstance(node, (nir.Affine, nir.Linear)):
            layers.append(_linear_from_nir(node))
        elif isinstance(node, (nir.Conv1d, nir.Conv2d)):
            w = torch.as_tensor(np.asarray(node.weight))
            cls = nn.Conv2d if isinstance(node, nir.Conv2d) else nn.Conv1d
            has_bias = bool(_meta(node).get("spiking_bias", 1))
            ints = (lambda v: v if isinstance(v, str) else tuple(int(i) for i in np.atleast_1d(v)))
            m = cls(w.shape[1] * node.groups, w.shape[0], tuple(w.shape[2:]),
                    stride=ints(node.stride), padding=ints(node.padding),
                    dilation=ints(node.dilation),
                    groups=node.groups, bias=has_bias, dtype=w.dtype)
            with torch.no_grad():
                m.weight.copy_(w)
                if has_bias:
                    m.bias.copy_(torch.as_tensor(np.asarray(node.bias)))
            layers.append(m)
        elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            k, st, pd = (tuple(int(i) for i in np.broadcast_to(np.asarray(v).flatten(), (2,)))
                         for v in (node.kernel_size, node.stride, node.padding))
            layers.append(SumPool2d(k, st, pd) if isinstance(node, nir.SumPool2d)
                          else nn.AvgPool2d(k, st, pd))
        elif isinstance(node, nir.Flatten):
            end = node.end_dim if node.end_dim < 0 else node.end_dim + 1
            layers.append(nn.Flatten(node.start_dim + 1, end))
        elif isinstance(node, (nir.LIF, nir.CubaLIF, nir.LI, nir.CubaLI)):
            layers.append(_neuron_from_nir(node, dt))
        else:
            raise TypeError(f"from_nir: node {key!r} of type {type(node).__name__} has no "
                             f"spiking counterpart")
    return spiking.Sequential(*layers)


def write_nir(model: nn.Module, example: torch.Tensor, path, *, sidecar: dict | None = None
              ) -> Path:
    """Write ``model`` as a NIR file (``nir.write``); ``sidecar`` (e.g. partitions,
    quantisation) goes to ``<path>.spiking.json`` beside it. Returns the path."""
    import nir

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    nir.write(str(tmp), to_nir(model, example))
    tmp.replace(path)
    if sidecar is not None:
        side = path.with_name(path.name + ".spiking.json")
        tmp_side = side.with_name(side.name + ".tmp")
        tmp_side.write_text(json.dumps(sidecar, indent=2, default=_jsonable))
        tmp_side.replace(side)
    return path


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_nir(path, *, dt: float = 1e-3) -> spiking.Sequential:
    return from_nir(path, dt=dt)
