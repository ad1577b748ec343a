"""Norse -> spiking: ``LIF``/``LIFCell``, ``LIFRecurrent``(``Cell``), ``LSNN``(``Cell``,
``Recurrent``, ``RecurrentCell``) and ``SequentialState`` stacks.

Norse 1.1 (``norse/torch/functional/lif.py``, ``lsnn.py``) integrates with forward Euler,
``H(x) = x > 0``:

.. code-block:: text

    LIF   j = i + x  (+ W_rec z[t-1] for LIFRecurrent, x := W_in x)
          v' = v + dt/tau_mem * ((v_leak - v) + j);   i' = j - dt/tau_syn * j
          z = H(v' - v_th);   v_new = (1 - z) v' + z v_reset
    LSNN  v' = v + dt/tau_mem * ((v_leak - v) + i);   b' = b + dt/tau_adapt * (v_th - b)
          z = H(v' - b');  v_new = (1 - z) v' + z v_reset;  b_new = b' + beta z
          i_new = (1 - dt/tau_syn) i + x  (+ W_rec z[t-1], x := W_in x)

That is :class:`~spiking.CubaLIF` (``current_first=True``) and :class:`~spiking.ALIF`
(``current_first=False``) with ``discretization="euler"``, ``normalize_input=True``,
``reset="zero"``. States differ in two places, converted by :func:`state_from_norse`:
spiking's LIF current ``i`` is the current before its decay, so Norse's ``i = alpha_syn * i``
(``alpha_syn = 1 - dt/tau_syn``); spiking's adaptation ``a`` is Norse's ``b - v_th``.
Norse's ``"super"`` surrogate is ``fast_sigmoid`` with sharpness 1: Norse 1.1's SuperSpike
backward is ``dy / (|x| + 1)^2`` and ignores ``alpha``. Norse builds the default initial
``v`` (and LIF ``i``) of ``LIF``/``LIFCell``/``LIFRecurrent`` in float32, so a ``v_leak`` not
representable in float32 starts Norse slightly off in float64; spiking starts at ``v_leak``.
"""

from __future__ import annotations

import torch
from torch import nn

from spiking.interop import _common as C
from spiking.kernels.lif import LIFState
from spiking.models.recurrent import Recurrent, RecurrentState
from spiking.neurons.base import Cell
from spiking.neurons.lif import ALIF, CubaLIF
from spiking.sequential import Sequential

SUPPORTED = ("norse LIF, LIFCell, LIFRecurrent, LIFRecurrentCell, LSNN, LSNNCell, "
             "LSNNRecurrent, LSNNRecurrentCell, and SequentialState stacks of those with Lift "
             "and " + ", ".join(c.__name__ for c in C.STATELESS))


_FEATUREWISE = (nn.Linear, nn.Identity, nn.Dropout)


def _surrogate(p, owner, override):
    """Norse threshold method -> spiking surrogate (the forward is the same Heaviside)."""
    if override is not None:
        return override, None
    alpha = float(torch.as_tensor(p.alpha))
    if p.method == "super":
        # norse/torch/functional/superspike.py: grad = dy / (|x| + 1)^2, alpha is unused.
        return "fast_sigmoid", 1.0
    if p.method == "triangle" and alpha == 1.0:
        # norse Triangle: grad = alpha * relu(1 - |x|) == spiking triangle(1) for alpha = 1.
        return "triangle", 1.0
    raise ValueError(
        f"{owner}: threshold method {p.method!r} (alpha={alpha:g}) has no spiking surrogate "
        f"(mapped: 'super', 'triangle' with alpha=1); pass surrogate=<name> to from_norse to "
        f"choose one")


def _neuron(module, p, *, adaptive: bool, override):
    owner = type(module).__name__
    act = getattr(getattr(module, "activation", None), "__name__", "")
    if p.method == "adjoint" or "adjoint" in act:
        raise ValueError(f"{owner}: the adjoint method is not supported")
    sg, sg_alpha = _surrogate(p, owner, override)
    kw = {"dt": module.dt, "reset": "zero", "discretization": "euler", "normalize_input": True,
          "surrogate": sg, "surrogate_alpha": sg_alpha, "tau_syn": 5e-3}
    ours = (ALIF(current_first=False, **kw) if adaptive
            else CubaLIF(current_first=True, **kw))
    taus = [("tau_mem", "tau_mem_inv"), ("tau_syn", "tau_syn_inv")]
    if adaptive:
        taus.append(("tau_adapt", "tau_adapt_inv"))
    for ours_name, peer_name in taus:
        peer = getattr(p, peer_name)
        C.put(ours, ours_name, C.taus_from_inverse(peer, peer_name, owner),
              C.requires_grad(peer))
    C.put(ours, "threshold", torch.as_tensor(p.v_th), C.requires_grad(p.v_th))
    C.put(ours, "v_leak", torch.as_tensor(p.v_leak), False)
    C.put(ours, "v_reset", torch.as_tensor(p.v_reset), False)
    if adaptive:
        C.put(ours, "adapt_jump", torch.as_tensor(p.beta), False)
    return ours


def _recurrent(module, neuron):
    w_in, w_rec = module.input_weights, module.recurrent_weights
    diag_zero = bool((torch.diagonal(w_rec.detach()) == 0).all())
    ours = Recurrent(neuron, int(module.hidden_size), int(module.input_size),
                     recurrent="dense", autapses=bool(module.autapses) or not diag_zero)
    C.copy_linear(w_in, None, ours.input)
    C.copy_linear(w_rec, None, ours.recurrent)
    return ours


def convert(module: nn.Module, surrogate=None) -> nn.Module:
    import norse.torch as nt

    override = C.resolve_surrogate(surrogate)
    t = type(module)
    adaptive = t in (nt.LSNN, nt.LSNNCell, nt.LSNNRecurrent, nt.LSNNRecurrentCell)
    if t in (nt.LIF, nt.LIFCell, nt.LSNN, nt.LSNNCell):
        neuron = _neuron(module, module.p, adaptive=adaptive, override=override)
        return Cell(neuron) if t in (nt.LIFCell, nt.LSNNCell) else neuron
    if t in (nt.LIFRecurrent, nt.LIFRecurrentCell, nt.LSNNRecurrent, nt.LSNNRecurrentCell):
        ours = _recurrent(module, _neuron(module, module.p, adaptive=adaptive,
                                          override=override))
        return ours.cell() if t in (nt.LIFRecurrentCell, nt.LSNNRecurrentCell) else ours
    if t is nt.SequentialState:
        layers = []
        for layer in module:
            lifted = type(layer) is nt.Lift
            layer = layer.lifted_module if lifted else layer
            if _is_norse_neuron(layer, nt):
                layers.append(convert(layer, surrogate))
                continue
            # Norse applies an unlifted layer to the whole [T, B, ...] tensor and spiking per
            # time step: the same only for feature-wise layers (Lift runs per step anyway).
            if not lifted and type(layer) not in _FEATUREWISE:
                raise ValueError(f"from_norse: unlifted {type(layer).__name__} in "
                                 f"SequentialState acts on [T, B, ...]; wrap it in norse Lift")
            layers.append(C.copy_stateless(layer, "from_norse", SUPPORTED))
        return Sequential(*layers)
    raise ValueError(f"from_norse: cannot convert {t.__module__}.{t.__qualname__}; "
                     f"supported: {SUPPORTED}")


def _is_norse_neuron(m, nt) -> bool:
    return type(m) in (nt.LIF, nt.LIFCell, nt.LIFRecurrent, nt.LIFRecurrentCell, nt.LSNN,
                       nt.LSNNCell, nt.LSNNRecurrent, nt.LSNNRecurrentCell)


def _unwrap(layer):
    inner = layer.neuron if isinstance(layer, Cell) else layer
    neuron = inner.neuron if isinstance(inner, Recurrent) else inner
    return inner, neuron


def state_from_norse(state, layer):
    """A Norse state as the state of ``layer`` (the module ``from_norse`` returned).

    ``LIFFeedForwardState(v, i)`` -> ``LIFState(v, i / alpha_syn)``;
    ``LSNNFeedForwardState(v, i, b)`` -> ``LIFState(v, i, a=b - v_th)``; the recurrent
    ``LIFState`` / ``LSNNState`` (with ``z``) -> ``RecurrentState(<that>, spikes=z)``.
    Scalars (Norse's default initial ``v`` or ``b``) are broadcast to the current's shape.
    """
    inner, neuron = _unwrap(layer)
    fields = state._fields
    i = state.i
    v, b = torch.broadcast_tensors(state.v, i)[0], None
    p = neuron.params(i if i.is_floating_point() else v)
    if "b" in fields:
        if p.alpha_adapt is None:
            raise ValueError(f"a Norse LSNN state needs an ALIF layer, got {type(neuron).__name__}")
        b = torch.broadcast_tensors(state.b, i)[0] - p.threshold
        ours = LIFState(v.clone(), i.clone(), b.clone())
    else:
        if p.alpha_adapt is not None or p.alpha_syn is None:
            raise ValueError(f"a Norse LIF state needs a CubaLIF layer, got "
                             f"{type(neuron).__name__}")
        if (torch.as_tensor(p.alpha_syn) == 0).any():
            raise ValueError("cannot convert a Norse LIF current when dt == tau_syn "
                             "(alpha_syn = 0): Norse's stored current is then always 0")
        ours = LIFState(v.clone(), (i / p.alpha_syn).clone(), None)
    if "z" in fields:
        if not isinstance(inner, Recurrent):
            raise ValueError("a Norse recurrent state (with z) needs a Recurrent layer")
        return RecurrentState(ours, state.z.clone())
    return ours
