"""Operation counts of a model run on data, per layer and in total, with NeuroBench's names.

``counts = count(model, x)`` runs ``model`` on ``x`` (time-first ``[T, B, ...]``) once, with
forward hooks, and returns a :class:`Counts`: per layer a :class:`LayerCounts`, and totals.
Every figure is **per sample** (divided by the batch size B), as NeuroBench reports them
(Yik et al. 2025, "The neurobench framework for benchmarking neuromorphic computing
algorithms and systems", Nat. Commun.; metric code ``neurobench.metrics``):

- ``parameters``: ``sum(p.numel())``; ``footprint_bytes``: parameters + buffers in bytes.
- ``connection_sparsity``: zero weights / all weights of Linear/Conv layers (recurrent
  Linear layers inside :class:`~spiking.models.recurrent.Recurrent` included).
- ``activation_sparsity``: zeros / all entries of every neuron layer's output (and ReLU /
  Sigmoid outputs), over time, batch and layers.
- ``dense``: synaptic operations if every input and weight were non-zero (bias excluded);
  ``effective_macs`` / ``effective_acs``: pairs (non-zero input, non-zero weight) actually
  needed; a layer call whose inputs at one time step are all in {-1, 0, 1} counts as
  accumulates (ACs), else as multiply-accumulates (MACs), exactly NeuroBench's rule.
- ``membrane_updates``: per neuron layer, all neurons of the first step plus, afterwards,
  the neuron-steps whose membrane changed (NeuroBench's effective count);
  ``membrane_updates_dense``: every neuron every step.
- ``neuron_ops`` / ``neuron_ops_dense``: the kernel's own per-update operation count
  (``op_counts()`` beside each kernel in :mod:`spiking.kernels`) times effective / dense
  updates. For LIF with a reset this is 4 per update, NeuroBench's figure for snnTorch Leaky.
- ``spikes``: non-zero outputs of spiking neuron layers.
- Memory traffic (ours, not NeuroBench's): ``weight_reads`` (one per effective synaptic
  operation, event-driven), ``weight_reads_dense``, ``state_reads`` = ``state_writes`` (each
  state variable of each neuron once per dense update), in words; ``word_bytes`` per layer.

Recurrence: :class:`~spiking.models.recurrent.Recurrent` layers count their input Linear
per step and the recurrent matrix on the previous step's spikes ``s[t-1]`` (every step
counts in ``dense``, as NeuroBench counts snnTorch ``RLeaky``'s recurrent Linear).

Fused models count themselves: a module with ``op_counts(t, b, ...)`` (exactly two required
parameters; e.g. :class:`~spiking.models.lmu.LMU`, EGRU, LSM, LTC/CfC nets) is called once
per forward with the input's T and B, plus ``x=`` (the input) and ``output=`` (the forward's
result) when its signature names them, so event-driven figures come from the activity of this
very run; it is not descended into. Its keys are mapped (``dense_macs``/``macs``/
``synaptic_ops`` -> MACs, ``spike_acs`` -> ACs, ``*_macs_dense`` with ``*_macs_event`` /
``*_acs_event`` -> dense and effective MACs / ACs, ``neuron_updates``/``membrane_updates``,
``neuron_ops``, ``events``/``spikes``; when events are reported they also give the layer's
activation sparsity); other keys are kept in ``extra``. A composite module whose work is
partly outside its children (the LMU memory of LMUFormer, the WKV recurrence of a SpikeGPT
block) defines ``extra_op_counts(*forward_args)`` for that part, and its children are counted
as usual. ``Embedding`` and normalisation layers are listed with their parameters and zero
operations. Modules with parameters that no counter saw run are listed in
``Counts.uncounted``. Steps run through ``module.step`` (recurrent/streaming modes) bypass
forward hooks: count the sequence (parallel) mode.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from spiking.models.delays import LearntDelays  # a Conv1d built from its synapses

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, LearntDelays)
_ACT = (nn.ReLU, nn.Sigmoid)
# layers with parameters but no synaptic operations in NeuroBench's sense (a table lookup, a
# per-channel affine normalisation): listed with their parameters, counted as zero operations
_NO_SYNOPS = (nn.Embedding, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
              nn.GroupNorm)


@dataclass(frozen=True)
class LayerCounts:
    """Counts of one layer, per sample (see the module docstring for each name)."""

    name: str
    kind: str
    parameters: int = 0
    footprint_bytes: int = 0
    weights: int = 0
    zero_weights: int = 0
    dense: float = 0.0
    effective_macs: float = 0.0
    effective_acs: float = 0.0
    membrane_updates: float = 0.0
    membrane_updates_dense: float = 0.0
    neuron_ops: float = 0.0
    neuron_ops_dense: float = 0.0
    spikes: float = 0.0
    activations: float = 0.0
    nonzero_activations: float = 0.0
    weight_reads: float = 0.0
    weight_reads_dense: float = 0.0
    state_reads: float = 0.0
    state_writes: float = 0.0
    word_bytes: int = 4
    extra: dict = field(default_factory=dict)

    @property
    def connection_sparsity(self) -> float:
        return self.zero_weights / self.weights if self.weights else 0.0

    @property
    def activation_sparsity(self) -> float:
        a = self.activations
        return (a - self.nonzero_activations) / a if a else 0.0


_SUMMED = ("parameters", "footprint_bytes", "weights", "zero_weights", "dense", "effective_macs",
           "effective_acs", "membrane_updates", "membrane_updates_dense", "neuron_ops",
           "neuron_ops_dense", "spikes", "activations", "nonzero_activations", "weight_reads",
           "weight_reads_dense", "state_reads", "state_writes")


@dataclass(frozen=True)
class Counts:
    """Per-layer and total counts of one run (per sample); ``samples`` = B, ``steps`` = T."""

    layers: tuple
    samples: int
    steps: int
    parameters: int
    footprint_bytes: int
    uncounted: tuple = ()

    def total(self, name: str) -> float:
        return sum(getattr(layer, name) for layer in self.layers)

    @property
    def connection_sparsity(self) -> float:
        w = self.total("weights")
        return self.total("zero_weights") / w if w else 0.0

    @property
    def activation_sparsity(self) -> float:
        a = self.total("activations")
        return (a - self.total("nonzero_activations")) / a if a else 0.0

    def totals(self) -> dict:
        out = {k: self.total(k) for k in _SUMMED if k not in ("parameters", "footprint_bytes")}
        out.update(parameters=self.parameters, footprint_bytes=self.footprint_bytes,
                   connection_sparsity=self.connection_sparsity,
                   activation_sparsity=self.activation_sparsity)
        return out

    def neurobench(self) -> dict:
        """The totals under NeuroBench's metric names and result layout."""
        return {
            "ParameterCount": self.parameters,
            "Footprint": self.footprint_bytes,
            "ConnectionSparsity": self.connection_sparsity,
            "ActivationSparsity": self.activation_sparsity,
            "SynapticOperations": {"Effective_MACs": self.total("effective_macs"),
                                   "Effective_ACs": self.total("effective_acs"),
                                   "Dense": self.total("dense")},
            "MembraneUpdates": self.total("membrane_updates"),
            "NeuronOperations": {"Effective Neuron Ops": self.total("neuron_ops"),
                                 "Neuron Dense Ops": self.total("neuron_ops_dense")},
        }

    def to_dict(self) -> dict:
        return {"samples": self.samples, "steps": self.steps, "totals": self.totals(),
                "neurobench": self.neurobench(), "uncounted": list(self.uncounted),
                "layers": [asdict(layer) for layer in self.layers]}

    def to_markdown(self) -> str:
        cols = ("dense", "effective_macs", "effective_acs", "membrane_updates", "neuron_ops",
                "spikes", "weight_reads", "state_reads")
        lines = [f"Operation counts per sample (B = {self.samples}, T = {self.steps}):", "",
                 "| layer | kind | params | " + " | ".join(cols) + " |",
                 "|---|---|---:|" + "---:|" * len(cols)]
        rows = [*self.layers, None]
        for layer in rows:
            if layer is None:
                vals = [self.total(c) for c in cols]
                head = f"| **total** | | {self.parameters} | "
            else:
                vals = [getattr(layer, c) for c in cols]
                head = f"| {layer.name} | {layer.kind} | {layer.parameters} | "
            lines.append(head + " | ".join(f"{v:,.6g}" for v in vals) + " |")
        lines += ["", (f"connection sparsity {self.connection_sparsity:.4f}, activation "
                       f"sparsity {self.activation_sparsity:.4f}, footprint "
                       f"{self.footprint_bytes:,} bytes")]
        if self.uncounted:
            lines.append("not counted (no counter ran): " + ", ".join(self.uncounted))
        return "\n".join(lines)


# ---------------------------------------------------------------------------- helpers
def _binary_steps(x: torch.Tensor) -> torch.Tensor:
    """Per leading index: True where all entries are in {-1, 0, 1} (NeuroBench's AC rule)."""
    ok = (x == 0) | (x == 1) | (x == -1)
    return ok.reshape(x.shape[0], -1).all(1)


def _split_steps(x: torch.Tensor, t: int, b: int) -> torch.Tensor:
    """A stateless layer's input as ``[steps, rows, ...]``: folded ``[T*B, ...]`` -> [T, B]."""
    if t > 1 and x.shape[0] == t * b:
        return x.reshape(t, b, *x.shape[1:])
    return x.unsqueeze(0)


def _param_info(m: nn.Module, recurse: bool) -> tuple[int, int]:
    n = sum(p.numel() for p in m.parameters(recurse=recurse))
    nbytes = sum(p.numel() * p.element_size() for p in m.parameters(recurse=recurse))
    nbytes += sum(b.numel() * b.element_size() for b in m.buffers(recurse=recurse))
    return n, nbytes


def _linear_ops(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Effective ops per step of ``x`` ``[S, rows..., in]`` through ``weight`` ``[out, in]``,
    and dense ops per step."""
    outdeg = (weight != 0).sum(0).to(torch.float64)
    nz = (x != 0).to(torch.float64)
    eff = (nz @ outdeg).reshape(x.shape[0], -1).sum(1)
    rows = x[0].numel() // x.shape[-1]
    return eff, float(rows * weight.shape[0] * weight.shape[1])


def _conv_ops(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    fn = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}[
        x.dim() - 3]
    wb = (layer.weight != 0).to(torch.float64)
    flat = (x.reshape(-1, *x.shape[2:]) != 0).to(torch.float64)
    eff = fn(flat, wb, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    eff = eff.reshape(x.shape[0], -1).sum(1)
    ones = torch.ones((1, *x.shape[2:]), dtype=torch.float64)
    dense = fn(ones, torch.ones_like(wb), None, layer.stride, layer.padding, layer.dilation,
               layer.groups).sum().item() * x.shape[1]
    return eff, float(dense)


_KEYMAP = {"dense_macs": "macs", "macs": "macs", "synaptic_ops": "macs", "spike_acs": "acs",
           "membrane_updates": "membrane_updates", "neuron_updates": "membrane_updates",
           "neuron_ops": "neuron_ops", "events": "spikes", "spikes": "spikes"}


def normalize_op_counts(d: dict) -> dict:
    """Map a kernel's or model's ``op_counts()`` keys onto LayerCounts fields.

    ``X_macs_dense``/``X_macs_event`` pairs give dense and effective MACs; with
    ``X_acs_event`` instead (the inputs were binary spikes) the effective figure is ACs; a
    ``X_macs_dense`` without either pair counts as both dense and effective MACs, as do the
    plain MAC keys.
    Unknown keys go to ``extra``. Returns a dict of LayerCounts field values (totals, not per
    sample)."""
    out = {"dense": 0.0, "effective_macs": 0.0, "effective_acs": 0.0, "membrane_updates": 0.0,
           "neuron_ops": 0.0, "spikes": 0.0, "extra": {}}
    for k, v in d.items():
        if k.endswith("_dense") and "macs" in k:
            out["dense"] += v
            base = k[: -len("_dense")]
            ev_ac = d.get(base.replace("macs", "acs") + "_event")
            ev = d.get(base + "_event")
            if ev_ac is not None:
                out["effective_acs"] += ev_ac
            else:
                out["effective_macs"] += v if ev is None else ev
        elif k.endswith("_event") and ("macs" in k or "acs" in k):
            continue
        elif _KEYMAP.get(k) == "macs":
            out["dense"] += v
            out["effective_macs"] += v
        elif _KEYMAP.get(k) == "acs":
            out["dense"] += v
            out["effective_acs"] += v
        elif k in _KEYMAP:
            out[_KEYMAP[k]] += v
        else:
            out["extra"][k] = v
    return out


def _counts_signature(m: nn.Module) -> tuple | None:
    """The optional parameter names of ``m.op_counts(t, b, ...)`` when ``m`` counts itself
    (exactly two required positional parameters ``t, b``), else None: the counter then descends
    into ``m``. (Whole-model summaries such as ``LMUFormer.op_counts(x)`` are not this
    protocol; their layers are counted one by one.)"""
    fn = getattr(m, "op_counts", None)
    if not callable(fn):
        return None
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in params if p.default is inspect.Parameter.empty
                and p.kind in positional]
    if len(required) != 2:
        return None
    return tuple(p.name for p in params if p.default is not inspect.Parameter.empty)


class _Acc:
    """Mutable per-layer accumulator (totals over the batch; divided by B at the end)."""

    def __init__(self, name: str, module: nn.Module):
        self.name, self.module = name, module
        self.kind = type(module).__name__
        self.v = {k: 0.0 for k in _SUMMED}
        self.extra: dict = {}
        self.word_bytes = 4
        self.ran = False
        self.opaque = False       # counts everything inside it (no child is visited)
        self.partial = False      # counts its own extra work; its children are visited
        self.recurrent_owner = False


# ---------------------------------------------------------------------------- counter
class _Counter:
    def __init__(self, model: nn.Module, t: int, b: int):
        self.t, self.b = t, b
        self.accs: list[_Acc] = []
        self.handles = []
        self.busy = False
        self._visit(model, "")

    def _walk(self, m: nn.Module, prefix: str):
        for name, child in m.named_children():
            self._visit(child, f"{prefix}{name}")

    def _visit(self, child: nn.Module, full: str):
        from spiking.models.recurrent import Recurrent
        from spiking.neurons.base import Neuron

        if isinstance(child, (nn.Linear, *_CONV)):
            self._add(full, child, self._stateless)
        elif isinstance(child, Recurrent):
            acc = self._add(full, child, self._recurrent)
            acc.recurrent_owner = acc.opaque = True
            if child.input is not None:
                self._add(f"{full}.input", child.input, self._stateless)
        elif isinstance(child, Neuron):
            self._add(full, child, self._neuron).opaque = True
        elif isinstance(child, _ACT):
            self._add(full, child, self._activation)
        elif _counts_signature(child) is not None:
            self._add(full, child, self._own_counts).opaque = True
        elif isinstance(child, _NO_SYNOPS):
            self._add(full, child, lambda *a: None)
        else:
            if callable(getattr(child, "extra_op_counts", None)):
                self._add(full, child, self._extra_counts).partial = True
            self._walk(child, full + "." if full else "")

    def _add(self, name, module, fn) -> _Acc:
        acc = _Acc(name, module)
        self.accs.append(acc)

        def hook(mod, args, kwargs, output):
            if not self.busy:
                acc.ran = True
                fn(acc, mod, args, kwargs, output)
        self.handles.append(module.register_forward_hook(hook, with_kwargs=True))
        return acc

    # -- stateless connection layers
    def _stateless(self, acc, mod, args, kwargs, output):
        x = args[0].detach()
        if isinstance(mod, nn.Linear) and x.dim() >= 3 and x.shape[:2] == (self.t, self.b):
            xs = x                              # a whole [T, B, ..., F] sequence at once
        else:
            xs = _split_steps(x, self.t, self.b)
        if isinstance(mod, nn.Linear):
            eff, dense = _linear_ops(xs, mod.weight.detach())
        else:
            eff, dense = _conv_ops(mod, xs)
            if isinstance(mod, LearntDelays) and mod.hard:
                dense /= mod.kernel_size[0]         # hard: one weight (one delay) per synapse
        binary = _binary_steps(xs)
        acc.v["effective_acs"] += float(eff[binary].sum())
        acc.v["effective_macs"] += float(eff[~binary].sum())
        acc.v["dense"] += dense * xs.shape[0]
        acc.v["weight_reads"] += float(eff.sum())
        acc.v["weight_reads_dense"] += dense * xs.shape[0]
        acc.word_bytes = mod.weight.element_size()

    # -- neurons
    def _neuron_counts(self, acc, mod, x, out, traj):
        """Membrane updates, neuron ops, spikes and activity from a trajectory [T, B, ...]."""
        v = traj[0]
        t = v.shape[0]
        dense_updates = v.numel()
        eff = v[0].numel() if t else 0
        if t > 1:
            eff += int(torch.count_nonzero(v[1:] - v[:-1]))
        kernel = getattr(mod, "kernel", None)
        n = v[0].numel() // max(v.shape[1], 1) if t else 0
        per = None
        if kernel is not None and hasattr(kernel, "op_counts"):
            try:
                ops = kernel.op_counts((t, v.shape[1], n), mod.params(x))
            except TypeError:
                ops = None
            if ops is not None:
                norm = normalize_op_counts(ops)
                upd = norm["membrane_updates"] or dense_updates
                per = norm["neuron_ops"] / upd if upd else 0.0
                for key in ("dense", "effective_macs", "effective_acs"):
                    acc.v[key] += norm[key]
                for k, val in norm["extra"].items():
                    acc.extra[k] = acc.extra.get(k, 0) + val
        per = 0.0 if per is None else per
        spiking = bool(_binary_steps(out.reshape(1, -1)).item())
        nfields = sum(1 for f in traj if f is not None)
        acc.v["membrane_updates"] += eff
        acc.v["membrane_updates_dense"] += dense_updates
        acc.v["neuron_ops"] += eff * per
        acc.v["neuron_ops_dense"] += dense_updates * per
        nnz = int(torch.count_nonzero(out))
        acc.v["spikes"] += nnz if spiking else 0
        acc.v["activations"] += out.numel()
        acc.v["nonzero_activations"] += nnz
        acc.v["state_reads"] += dense_updates * nfields
        acc.v["state_writes"] += dense_updates * nfields
        acc.word_bytes = v.element_size()

    def _rerun(self, mod, args, kwargs):
        self.busy = True
        try:
            with torch.no_grad():
                kw = dict(kwargs)
                kw["record"] = True
                return mod(*args, **kw)
        finally:
            self.busy = False

    def _neuron(self, acc, mod, args, kwargs, output):
        res = self._rerun(mod, args, kwargs)
        x = args[0]
        if getattr(mod, "batch_first", False):
            x = x.transpose(0, 1)
        out = res[0].transpose(0, 1) if getattr(mod, "batch_first", False) else res[0]
        self._neuron_counts(acc, mod, x, out.detach(), res[2])

    def _recurrent(self, acc, mod, args, kwargs, output):
        res = self._rerun(mod, args, kwargs)
        bf = mod.batch_first
        out = (res[0].transpose(0, 1) if bf else res[0]).detach()
        state = args[1] if len(args) > 1 else kwargs.get("state")
        self._neuron_counts(acc, mod.neuron, out, out, res[2])
        prev0 = out.new_zeros(out.shape[1:]) if state is None else state.spikes.detach()
        prev = torch.cat([prev0.unsqueeze(0), out[:-1]])
        if mod.recurrent_kind == "dense":
            w = mod.recurrent.weight.detach()
            if not mod.autapses:
                w = w * mod._autapse_mask
            eff, dense = _linear_ops(prev, w)
            acc.word_bytes = w.element_size()
        else:
            w = torch.as_tensor(mod.recurrent_weight).detach().expand(out.shape[-1])
            eff = ((prev != 0) & (w != 0)).to(torch.float64).reshape(prev.shape[0], -1).sum(1)
            dense = float(prev[0].numel())
        binary = _binary_steps(prev)
        acc.v["effective_acs"] += float(eff[binary].sum())
        acc.v["effective_macs"] += float(eff[~binary].sum())
        acc.v["dense"] += dense * prev.shape[0]
        acc.v["weight_reads"] += float(eff.sum())
        acc.v["weight_reads_dense"] += dense * prev.shape[0]

    def _activation(self, acc, mod, args, kwargs, output):
        acc.v["activations"] += output.numel()
        acc.v["nonzero_activations"] += int(torch.count_nonzero(output))

    def _own_counts(self, acc, mod, args, kwargs, output):
        x = args[0] if args else next(iter(kwargs.values()))
        t, b = (x.shape[1], x.shape[0]) if getattr(mod, "batch_first", False) else x.shape[:2]
        optional = _counts_signature(mod)
        kw = {}
        if "x" in optional:
            kw["x"] = x.detach()
        if "output" in optional:
            kw["output"] = output
        self._busy_call(acc, lambda: mod.op_counts(int(t), int(b), **kw))

    def _extra_counts(self, acc, mod, args, kwargs, output):
        """Work a composite module does outside its child modules (e.g. a WKV recurrence):
        ``mod.extra_op_counts`` gets the forward's own arguments."""
        self._busy_call(acc, lambda: mod.extra_op_counts(*args, **kwargs))

    def _busy_call(self, acc, fn):
        self.busy = True          # a model that re-runs itself to measure activity is not
        try:                      # counted a second time by the hooks inside it
            with torch.no_grad():
                raw = fn()
        finally:
            self.busy = False
        norm = normalize_op_counts(raw)
        if any(_KEYMAP.get(k) == "spikes" for k in raw):
            # an event-driven layer that reports its events: its outputs are the updates
            acc.v["activations"] += norm["membrane_updates"]
            acc.v["nonzero_activations"] += norm["spikes"]
        for key in ("dense", "effective_macs", "effective_acs", "membrane_updates",
                    "neuron_ops", "spikes"):
            acc.v[key] += norm[key]
        acc.v["membrane_updates_dense"] += norm["membrane_updates"]
        acc.v["neuron_ops_dense"] += norm["neuron_ops"]
        acc.v["weight_reads"] += norm["effective_macs"] + norm["effective_acs"]
        acc.v["weight_reads_dense"] += norm["dense"]
        for k, val in norm["extra"].items():
            acc.extra[k] = acc.extra.get(k, 0) + val

    def close(self):
        for h in self.handles:
            h.remove()


def _static(acc: _Acc) -> None:
    m = acc.module
    n, nbytes = _param_info(m, recurse=not acc.partial)
    if acc.partial:
        acc.v["parameters"], acc.v["footprint_bytes"] = n, nbytes
        return
    if acc.recurrent_owner and m.input is not None:
        n_in, b_in = _param_info(m.input, recurse=True)
        n, nbytes = n - n_in, nbytes - b_in
    acc.v["parameters"], acc.v["footprint_bytes"] = n, nbytes
    weights = []
    if isinstance(m, (nn.Linear, *_CONV)):
        weights = [m.weight]
    elif acc.recurrent_owner and m.recurrent_kind == "dense":
        weights = [m.recurrent.weight]
    elif acc.opaque and not hasattr(m, "kernel"):
        weights = [mod.weight for mod in m.modules() if isinstance(mod, (nn.Linear, *_CONV))]
    acc.v["weights"] = sum(w.numel() for w in weights)
    acc.v["zero_weights"] = sum(int((w == 0).sum()) for w in weights)


def count(model: nn.Module, x: torch.Tensor, *, forward=None, batch_first: bool = False
          ) -> Counts:
    """Run ``model`` on ``x`` ``[T, B, ...]`` (``[B, T, ...]`` with ``batch_first``; integer
    tokens ``[T, B]`` for a language model) and count.

    ``forward(model, x)`` overrides how the model is called (default ``model(x)``). The model
    runs once under ``torch.no_grad()``; neuron layers are re-run with ``record=True`` to read
    their membrane trajectories. Returns per-sample :class:`Counts`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    tokens = isinstance(x, torch.Tensor) and x.dim() == 2 and not x.is_floating_point()
    if not isinstance(x, torch.Tensor) or (x.dim() < 3 and not tokens):
        raise ValueError("x must be a time-first sequence [T, B, ...] (rank >= 3), or integer "
                         "tokens [T, B], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
                         f"{' ' + str(x.dtype) if isinstance(x, torch.Tensor) else ''}")
    t, b = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    counter = _Counter(model, int(t), int(b))
    for acc in counter.accs:
        acc.name = acc.name or type(model).__name__
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            (forward or (lambda m, inp: m(inp)))(model, x)
    finally:
        counter.close()
        model.train(was_training)
    layers, uncounted = [], []
    for acc in counter.accs:
        _static(acc)
        if not acc.ran and acc.v["parameters"]:
            uncounted.append(acc.name)
        vals = {k: (v / b if k not in ("parameters", "footprint_bytes", "weights",
                                       "zero_weights") else int(v)) for k, v in acc.v.items()}
        layers.append(replace(LayerCounts(acc.name, acc.kind), **vals,
                              word_bytes=acc.word_bytes,
                              extra={k: v / b for k, v in acc.extra.items()
                                     if isinstance(v, (int, float))}))
    n, nbytes = _param_info(model, recurse=True)
    seen = {id(a.module) for a in counter.accs}
    for name, m in model.named_modules():
        if id(m) in seen or not name:
            continue
        own = sum(p.numel() for p in m.parameters(recurse=False))
        if own and not any(a.opaque and (name.startswith(a.name + ".") or a.module is model)
                           for a in counter.accs):
            uncounted.append(name)
    return Counts(tuple(layers), int(b), int(t), n, nbytes, tuple(uncounted))
