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
from spiking.hardware.nir_import import from_nir, read_nir  # noqa: F401  (the inverse)
from spiking.kernels import common
from spiking.models.recurrent import Recurrent

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
