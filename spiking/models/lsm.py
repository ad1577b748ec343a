"""LSM: a liquid state machine (Maass, Natschläger & Markram 2002) with a trained linear readout.

Architecture (``x`` ``[T, B, *input_shape]``, flattened to ``I`` inputs per step)::

    sparse random input projection  W_in [I, N]   (each input reaches a fraction p_input of the
                                                   excitatory and inhibitory neurons)
    fixed reservoir of N LIF neurons (spiking.kernels.lsm: CSR weights, event-driven)
    features: spike counts of every neuron in n_windows equal time windows  [B, n_windows * N]
    readout: Linear(n_windows * N, classes), fitted in closed form (ridge) or by gradient

Reservoir construction (all fixed, drawn from ``seed``):

- populations: a fraction ``frac_exc`` (0.8, Maass et al. 2002) excitatory, the rest
  inhibitory; Dale's law: a neuron's outgoing weights all have its population's sign;
- connectivity ``"random"``: each ordered pair (no autapses) with probability ``p_connect``;
  ``"distance"``: neurons on a 3-D grid, ``P(a->b) = C[type] exp(-(D(a,b)/lam)^2)`` with
  ``C`` = EE 0.3, EI 0.2, IE 0.4, II 0.1 and ``lam = 2`` (Maass et al. 2002, Sec. "Methods");
- magnitudes from ``weight_sampler(pre, post, generator) -> |w|`` (default uniform in
  [0.5, 1.5]); inhibitory magnitudes times ``g_inh`` (4, Brunel 2000's balance of an 80/20
  network). A device model (e.g. a memristive crossbar) plugs in through ``weight_sampler``;
- scaling: ``spectral_radius`` rescales ``W`` so its largest |eigenvalue| is the value given
  (ARPACK on the sparse matrix); :meth:`LSM.scale_to_rate` instead bisects the input gain
  until the mean firing rate on given inputs hits a target;
- refractory periods 3 ms (excitatory) and 2 ms (inhibitory), Maass et al. 2002.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from spiking.kernels import common
from spiking.kernels import lsm as K
from spiking.models.registry import register_model

#: Maass et al. 2002: connection scale C by (pre, post) type and length scale lambda.
C_DISTANCE = {"EE": 0.3, "EI": 0.2, "IE": 0.4, "II": 0.1}
LAMBDA = 2.0
T_REF = {"exc": 3e-3, "inh": 2e-3}

RECIPE = {"n_time_bins": 30, "epochs": 10, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4,
          "model_args": {"n_neurons": 1000}}


def uniform_magnitudes(pre: torch.Tensor, post: torch.Tensor, generator: torch.Generator):
    """Default weight sampler: |w| ~ U[0.5, 1.5] per synapse."""
    return 0.5 + torch.rand(pre.numel(), generator=generator, dtype=torch.float64)


def grid_positions(n: int) -> torch.Tensor:
    """Integer 3-D grid positions of ``n`` neurons on a near-cubic lattice ``[n, 3]``."""
    side = math.ceil(n ** (1 / 3))
    idx = torch.arange(n)
    return torch.stack([idx % side, (idx // side) % side, idx // (side * side)], 1).double()


def connect(n: int, exc: torch.Tensor, kind: str, p_connect: float, generator: torch.Generator,
            lam: float = LAMBDA, positions: torch.Tensor | None = None):
    """(pre, post) index tensors of the sampled synapses, no autapses, chunked over pre."""
    pres, posts = [], []
    pos = grid_positions(n) if positions is None else positions.double()
    for a in range(0, n, 512):
        rows = torch.arange(a, min(n, a + 512))
        if kind == "random":
            prob = torch.full((rows.numel(), n), float(p_connect), dtype=torch.float64)
        else:
            d2 = torch.cdist(pos[rows], pos).pow(2)
            c = torch.empty(rows.numel(), n, dtype=torch.float64)
            e_pre, e_post = exc[rows][:, None], exc[None, :]
            c[:] = C_DISTANCE["II"]
            c[e_pre & e_post] = C_DISTANCE["EE"]
            c[(e_pre & ~e_post)] = C_DISTANCE["EI"]
            c[(~e_pre & e_post)] = C_DISTANCE["IE"]
            prob = c * torch.exp(-d2 / lam ** 2)
        prob[torch.arange(rows.numel()), rows] = 0.0
        hit = torch.rand(prob.shape, generator=generator, dtype=torch.float64) < prob
        r, cidx = hit.nonzero(as_tuple=True)
        pres.append(rows[r])
        posts.append(cidx)
    return torch.cat(pres), torch.cat(posts)


def spectral_radius_of(indptr, indices, weights, n: int) -> float:
    """Largest |eigenvalue| of the CSR matrix (dense for n <= 600, else ARPACK)."""
    import scipy.sparse as sp
    m = sp.csr_matrix((weights.double().numpy(), indices.numpy(), indptr.numpy()), shape=(n, n))
    if n <= 600 or m.nnz == 0:
        return float(np.abs(np.linalg.eigvals(m.toarray())).max()) if n else 0.0
    from scipy.sparse.linalg import eigs
    # Random reservoirs have many eigenvalues of nearly the largest modulus (circular law), so
    # asking ARPACK for one can settle on a runner-up: ask for several with a wide Krylov space
    # and a fixed start vector (ARPACK's default start is random, so results would vary by run).
    k = min(8, n - 2)
    v0 = np.random.default_rng(0).standard_normal(n)
    vals = eigs(m, k=k, which="LM", return_eigenvectors=False, tol=1e-10,
                ncv=min(n, max(4 * k, 64)), maxiter=50 * n, v0=v0)
    return float(np.abs(vals).max())


def ridge(features: torch.Tensor, targets: torch.Tensor, lam: float):
    """Closed-form ridge regression with an unpenalised bias.

    Minimises ``|F W + 1 b - Y|^2 + lam |W|^2`` for ``F`` ``[S, D]``, ``Y`` ``[S, C]``:
    centre ``F`` and ``Y``, solve ``(Fc^T Fc + lam I) W = Fc^T Yc`` (or the dual
    ``W = Fc^T (Fc Fc^T + lam I)^-1 Yc`` when ``D > S``), ``b = mean(Y) - mean(F) W``.
    Returns ``(W [D, C], b [C])`` in float64.
    """
    if lam < 0:
        raise ValueError(f"ridge lam must be >= 0, got {lam!r}")
    f = features.detach().double()
    y = targets.detach().double()
    mf, my = f.mean(0), y.mean(0)
    fc, yc = f - mf, y - my
    s, d = fc.shape
    if d <= s:
        a = fc.T @ fc + lam * torch.eye(d, dtype=f.dtype)
        w = torch.linalg.lstsq(a, fc.T @ yc).solution if lam == 0 else torch.linalg.solve(
            a, fc.T @ yc)
    else:
        g = fc @ fc.T + lam * torch.eye(s, dtype=f.dtype)
        w = fc.T @ (torch.linalg.lstsq(g, yc).solution if lam == 0 else torch.linalg.solve(g, yc))
    return w, my - mf @ w


class LSM(nn.Module):
    """Liquid state machine classifier: ``logits, activity = LSM(...)(x)``; see module doc."""

    def __init__(self, input_shape, n_classes: int, n_neurons: int = 1000, *,
                 frac_exc: float = 0.8, connectivity: str = "random", p_connect: float = 0.1,
                 lam: float = LAMBDA, g_inh: float = 4.0, weight_scale: float = 0.2,
                 spectral_radius: float | None = None, p_input: float = 0.1,
                 input_scale: float = 1.0, tau_mem: float = 20e-3, tau_syn: float = 5e-3,
                 threshold: float = 1.0, dt: float = 1e-3, n_windows: int = 4,
                 weight_sampler: Callable | None = None, seed: int = 0, backend: str = "auto"):
        super().__init__()
        shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(input_shape)
        n_in = int(np.prod(shape))
        if n_neurons < 2 or n_in < 1 or n_classes < 2:
            raise ValueError(f"need n_neurons >= 2, inputs >= 1, n_classes >= 2; got "
                             f"{n_neurons}, {n_in}, {n_classes}")
        if connectivity not in ("random", "distance"):
            raise ValueError(f"connectivity must be 'random' or 'distance', got {connectivity!r}")
        for name, v in (("frac_exc", frac_exc), ("p_connect", p_connect), ("p_input", p_input)):
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if n_windows < 1:
            raise ValueError(f"n_windows must be >= 1, got {n_windows!r}")
        self.input_shape, self.n_in, self.n = shape, n_in, int(n_neurons)
        self.dt = common.check_dt(dt)
        self.n_windows, self.backend = int(n_windows), backend
        gen = torch.Generator().manual_seed(int(seed))
        n = self.n
        exc = torch.zeros(n, dtype=torch.bool)
        exc[torch.randperm(n, generator=gen)[: round(frac_exc * n)]] = True
        pre, post = connect(n, exc, connectivity, p_connect, gen, lam)
        sampler = weight_sampler or uniform_magnitudes
        mag = torch.as_tensor(sampler(pre, post, gen), dtype=torch.float64).reshape(-1)
        if mag.numel() != pre.numel() or (mag < 0).any() or not torch.isfinite(mag).all():
            raise ValueError("weight_sampler must return finite magnitudes >= 0, one per synapse "
                             f"({pre.numel()}), got {mag.numel()} values")
        sign = torch.where(exc[pre], 1.0, -float(g_inh)).double()
        w = weight_scale * sign * mag
        order = torch.argsort(pre * n + post)
        pre, post, w = pre[order], post[order], w[order]
        indptr = torch.zeros(n + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(torch.bincount(pre, minlength=n), 0)
        if spectral_radius is not None:
            rho = spectral_radius_of(indptr, post, w, n)
            if rho > 0:
                w = w * (float(spectral_radius) / rho)
        self.register_buffer("exc", exc)
        self.register_buffer("indptr", indptr)
        self.register_buffer("indices", post)
        self.register_buffer("weights", w.float())
        w_in = torch.rand(n_in, n, generator=gen) < p_input
        w_in = w_in.float() * (0.5 + torch.rand(n_in, n, generator=gen))
        self.register_buffer("w_in", w_in)
        self.input_scale = float(input_scale)
        self.register_buffer("alpha_mem", torch.tensor(common.decay(self.dt, tau_mem)).float())
        self.register_buffer("alpha_syn", torch.tensor(common.decay(self.dt, tau_syn)).float())
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        n_ref = torch.where(exc, round(T_REF["exc"] / self.dt), round(T_REF["inh"] / self.dt))
        self.register_buffer("n_ref", n_ref.to(torch.int64))
        self.readout = nn.Linear(self.n_windows * n, n_classes)

    def params(self) -> K.LSMParams:
        return K.LSMParams(self.indptr, self.indices, self.weights, self.alpha_mem,
                           self.alpha_syn, self.threshold, self.n_ref)

    def reservoir(self, x: torch.Tensor) -> torch.Tensor:
        """Reservoir spikes ``[T, B, N]`` for input ``x`` ``[T, B, *input_shape]``."""
        if x.dim() != 2 + len(self.input_shape) or tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(f"LSM expects [T, B, {', '.join(map(str, self.input_shape))}], got "
                             f"{tuple(x.shape)}")
        t, b = x.shape[:2]
        with torch.no_grad():
            cur = (x.reshape(t * b, -1).float() @ self.w_in) * self.input_scale
            s, _ = K.run(cur.reshape(t, b, self.n), None, self.params(), backend=self.backend)
        return s

    def features(self, spikes: torch.Tensor) -> torch.Tensor:
        """Spike counts per neuron in ``n_windows`` equal windows: ``[B, n_windows * N]``."""
        t = spikes.shape[0]
        edges = [round(k * t / self.n_windows) for k in range(self.n_windows + 1)]
        return torch.cat([spikes[a:b].sum(0) for a, b in itertools.pairwise(edges)], 1)

    def forward(self, x: torch.Tensor):
        s = self.reservoir(x)
        return self.readout(self.features(s)), {"reservoir": s}

    @torch.no_grad()
    def transform(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Readout features ``[S, n_windows * N]`` of ``x`` ``[T, S, ...]``, in batches."""
        return torch.cat([self.features(self.reservoir(x[:, a:a + batch_size].float()))
                          for a in range(0, x.shape[1], batch_size)])

    @torch.no_grad()
    def fit_ridge(self, x: torch.Tensor | None, y: torch.Tensor, lam: float = 1.0,
                  features: torch.Tensor | None = None) -> torch.Tensor:
        """Fit the readout in closed form (:func:`ridge` on one-hot targets) on ``x``
        ``[T, S, ...]`` with labels ``y`` ``[S]``, or on precomputed ``features`` ``[S, D]``;
        returns the features used."""
        feats = self.transform(x) if features is None else features
        onehot = torch.nn.functional.one_hot(y.long(), self.readout.out_features).double()
        w, b = ridge(feats, onehot, lam)
        self.readout.weight.copy_(w.T.float())
        self.readout.bias.copy_(b.float())
        return feats

    @torch.no_grad()
    def scale_to_rate(self, x: torch.Tensor, rate: float, iters: int = 12) -> float:
        """Bisect ``input_scale`` until the mean firing rate (spikes per neuron per step) on
        ``x`` is ``rate``; returns the rate reached."""
        if not 0 < rate < 1:
            raise ValueError(f"target rate must be in (0, 1) spikes per step, got {rate!r}")
        lo, hi = 0.0, max(self.input_scale, 1e-3)
        while float(self.reservoir(x).mean()) < rate and hi < 1e6:
            lo, hi = hi, hi * 4
            self.input_scale = hi
        for _ in range(iters):
            self.input_scale = (lo + hi) / 2
            if float(self.reservoir(x).mean()) < rate:
                lo = self.input_scale
            else:
                hi = self.input_scale
        self.input_scale = (lo + hi) / 2
        return float(self.reservoir(x).mean())

    def op_counts(self, t: int, b: int, spikes: torch.Tensor | None = None, *, output=None,
                  x: torch.Tensor | None = None) -> dict:
        """Reservoir operations of ``t`` steps x ``b`` samples (see kernels.lsm.op_counts) plus
        the input projection (dense I x N per step) and the readout.

        ``spikes`` (the reservoir's ``[T, B, N]``, or the ``output`` of a forward pass) gives
        the event-driven count: each spike reads its neuron's fan-out (``recurrent_acs_event``,
        accumulates of binary spikes). ``x`` gives the input projection's effective count
        (non-zero inputs x their fan-out; ACs when ``x`` is binary)."""
        if spikes is None and output is not None:
            spikes = output[1]["reservoir"]
        out = K.op_counts((t, b, self.n), self.params(), spikes)
        out["recurrent_macs_dense"] = out.pop("macs_dense")
        if "synops_event" in out:
            out["recurrent_acs_event"] = out["synops_event"]
        out["input_macs_dense"] = t * b * self.n_in * self.n
        out["input_synops"] = t * b * int((self.w_in != 0).sum())
        if x is not None:
            xf = x.reshape(t * b, -1)
            fan = (self.w_in != 0).sum(1).to(torch.float64)
            ev = int(((xf != 0).to(torch.float64) @ fan).sum())
            binary = bool(((xf == 0) | (xf == 1)).all())
            out["input_acs_event" if binary else "input_macs_event"] = ev
        out["readout_macs_dense"] = b * self.readout.in_features * self.readout.out_features
        return out


def build(input_shape, n_classes: int, **kw) -> LSM:
    """Registry factory for ``spiking train --model lsm`` (readout trained by gradient)."""
    return LSM(input_shape, n_classes, **kw)


register_model("lsm", build)
