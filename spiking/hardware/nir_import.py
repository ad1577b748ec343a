"""NIR import: :func:`from_nir` / :func:`read_nir`, the inverse of
:mod:`spiking.hardware.export` (whose docstring gives the mapping of every node, the
``spiking_*`` metadata read back here, and how parallel ``Delay`` branches become one
:class:`~spiking.models.delays.DelayedLinear`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

import spiking
from spiking.models.recurrent import Recurrent
from spiking.pooling import SumPool2d


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

    parts = []          # (weight [O, I] or None, lag per input, lag per output, bias or None)
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

            def ints(v):
                return v if isinstance(v, str) else tuple(int(i) for i in np.atleast_1d(v))
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


def read_nir(path, *, dt: float = 1e-3) -> spiking.Sequential:
    return from_nir(path, dt=dt)
