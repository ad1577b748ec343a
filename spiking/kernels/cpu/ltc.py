r"""Fused CPU (numba) LTC: the whole time loop and its K ODE unfolds in one kernel per direction.

The update is the one of :mod:`spiking.kernels.ltc` (its docstring is the spec). Only the
sequential part is fused; the parts without a recurrence run as batched torch ops over all T
steps at once (autograd differentiates them):

.. code-block:: text

    torch:  u = map_inputs(x);  (num_s, den_s) = sensory_drive(u)    [T, B, N] each
            c = cm * K / D                                           [T, B, N]
    numba:  v[t] = K semi-implicit unfolds from v[t-1] (spec loop), for t = 0..T-1
    torch:  y = map_outputs(v)

Forward keeps only the trajectory ``v [T, B, N]``; backward recomputes the K unfolds of each
step from ``v[t-1]`` (same arithmetic as the forward), keeping their N^2 synapse sigmoids, and
back-propagates through them in reverse without another exp. The synapse parameters are
passed transposed (``[i, j]`` for synapse j -> i) so that every inner loop runs over
contiguous memory, and the sigmoids use the kernel's own vectorisable exp, in the input's
precision (float32 or float64; see ``_sigmoid_into64``). The sums over presynaptic j are
vectorised too (numba fastmath ``reassoc``, ``contract``): they round differently from the
reference's sequential sums in the last bits. Scratch of the backward: K N^2 sigmoids per
sample in flight (one per thread).

With ``q = den + eps``, ``v' = num / q`` and adjoint ``gv'`` of one unfold:

.. code-block:: text

    gn = gv' / q ;  gd = -gv' * v' / q                 (adjoints of num and den)
    gc += gn * v + gd ;  g_gleak += gn * vleak + gd ;  g_vleak += gn * gleak
    g_num_s += gn ;  g_den_s += gd ;  gv = gn * c      (direct path to v_{k-1})
    per synapse j -> i, sg = sigmoid(sigma (v_j - mu)), a = w sg:
        ga = gn_i * erev + gd_i ;  g_erev += gn_i * a ;  g_w += ga * sg
        gz = ga * w * sg (1 - sg) ;  g_sigma += gz (v_j - mu) ;  g_mu -= gz sigma ;
        gv_j += gz sigma

``numba.prange`` splits the batch over threads; each sample accumulates its own parameter
gradients (``[B, N, N]``), summed afterwards.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba.extending import overload

from spiking.kernels import ltc as K
from spiking.kernels.cpu.vexp import exp_into32, exp_into64

CALLS = {"fwd": 0, "bwd": 0}  # sentinel for tests: incremented by every fused run


# The N^2 synapse sigmoids 1 / (1 + exp(z)) of each unfold are most of the work: they are
# taken in one vectorised pass with the exp of spiking.kernels.cpu.vexp, in the precision of
# the input (float32 as the reference computes it, or float64).

@numba.njit(cache=True)
def _sigmoid_into64(z, sg, bits, scale):
    """sg[m] = 1 / (1 + exp(z[m])) for float64 arrays (``bits`` int64 scratch of the same
    length, ``scale`` its float64 view); exact 0 and 1 where exp overflows or underflows,
    NaN for NaN."""
    exp_into64(z, sg, bits, scale)
    for m in range(z.shape[0]):
        sg[m] = 1.0 / (1.0 + sg[m])


@numba.njit(cache=True)
def _sigmoid_into32(z, sg, bits, scale):
    """The float32 twin of :func:`_sigmoid_into64` (``bits`` int32, ``scale`` float32)."""
    one = np.float32(1.0)
    exp_into32(z, sg, bits, scale)
    for m in range(z.shape[0]):
        sg[m] = one / (one + sg[m])


def _sigmoid_into(z, sg, bits, scale):
    """1 / (1 + exp(z)) elementwise, in the precision of ``z`` (numba picks the twin)."""


@overload(_sigmoid_into)
def _sigmoid_into_impl(z, sg, bits, scale):
    if z.dtype == numba.types.float32:
        return lambda z, sg, bits, scale: _sigmoid_into32(z, sg, bits, scale)
    return lambda z, sg, bits, scale: _sigmoid_into64(z, sg, bits, scale)


def _scratch(n, like):
    """(z, sg, bits, scale): scratch of n values in the precision of ``like``."""


@overload(_scratch)
def _scratch_impl(n, like):
    if like.dtype == numba.types.float32:
        def f32(n, like):
            bits = np.empty(n, dtype=np.int32)
            return np.empty(n, dtype=np.float32), np.empty(n, dtype=np.float32), bits, \
                bits.view(np.float32)
        return f32

    def f64(n, like):
        bits = np.empty(n, dtype=np.int64)
        return np.empty(n), np.empty(n), bits, bits.view(np.float64)
    return f64


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _unfold(v, c, ns, ds, wT, sigT, muT, erevT, gl, vl, eps, out, q, sg, z, bits, scale):
    """One semi-implicit sub-step from ``v`` into ``out`` (spec loop of kernels/ltc.py);
    ``q`` receives the denominators ``den + eps``, ``sg[i * N + j]`` the synapse sigmoids.
    Parameters come transposed (``wT[i, j]`` = ``w[j, i]``, synapse j -> i) so that the
    loops over presynaptic j are contiguous; all N^2 sigmoids of the sub-step are taken in one
    vectorised pass (z, sg, bits, scale: scratch of N^2 from :func:`_scratch`)."""
    n = v.shape[0]
    for i in range(n):
        for j in range(n):
            z[i * n + j] = -(sigT[i, j] * (v[j] - muT[i, j]))
    _sigmoid_into(z, sg, bits, scale)
    for i in range(n):
        sa = 0.0
        sae = 0.0
        for j in range(n):
            a = wT[i, j] * sg[i * n + j]
            sae += a * erevT[i, j]
            sa += a
        num = c[i] * v[i] + gl[i] * vl[i] + sae + ns[i]
        den = c[i] + gl[i] + sa + ds[i]
        q[i] = den + eps
        out[i] = num / q[i]


@numba.njit(parallel=True, cache=True)
def _fwd(v0, c, ns, ds, wT, sigT, muT, erevT, gl, vl, eps, n_unf, traj):
    T, B, N = c.shape
    for b in numba.prange(B):
        v = v0[b].copy()
        nxt = np.empty_like(v)
        q = np.empty_like(v)
        z, sg, bits, scale = _scratch(N * N, v0)
        for t in range(T):
            for _ in range(n_unf):
                _unfold(v, c[t, b], ns[t, b], ds[t, b], wT, sigT, muT, erevT, gl, vl, eps, nxt,
                        q, sg, z, bits, scale)
                v[:] = nxt
            traj[t, b] = v


@numba.njit(parallel=True, cache=True)
def _bwd(v0, traj, gtraj, c, ns, ds, wT, sigT, muT, erevT, gl, vl, eps, n_unf,
         gv0, gc, gns, gds, gwT, gsigT, gmuT, gerevT, ggl, gvl):
    T, B, N = c.shape
    for b in numba.prange(B):
        vs = np.empty((n_unf + 1, N), dtype=v0.dtype)
        qs = np.empty((n_unf, N), dtype=v0.dtype)
        sgs = np.empty((n_unf, N * N), dtype=v0.dtype)  # sigmoids of the K unfolds of a step
        z, _, bits, scale = _scratch(N * N, v0)
        gv = np.zeros(N, dtype=v0.dtype)
        gn = np.empty(N, dtype=v0.dtype)
        gd = np.empty(N, dtype=v0.dtype)
        for t in range(T - 1, -1, -1):
            vs[0] = v0[b] if t == 0 else traj[t - 1, b]
            for k in range(n_unf):
                _unfold(vs[k], c[t, b], ns[t, b], ds[t, b], wT, sigT, muT, erevT, gl, vl, eps,
                        vs[k + 1], qs[k], sgs[k], z, bits, scale)
            for i in range(N):
                gv[i] += gtraj[t, b, i]
            for k in range(n_unf - 1, -1, -1):
                v = vs[k]
                sg = sgs[k]
                for i in range(N):            # unit terms
                    gn[i] = gv[i] / qs[k, i]
                    gd[i] = -gv[i] * vs[k + 1, i] / qs[k, i]
                    gc[t, b, i] += gn[i] * v[i] + gd[i]
                    ggl[b, i] += gn[i] * vl[i] + gd[i]
                    gvl[b, i] += gn[i] * gl[i]
                    gns[t, b, i] += gn[i]
                    gds[t, b, i] += gd[i]
                for i in range(N):            # direct path c * v_{k-1}
                    gv[i] = gn[i] * c[t, b, i]
                for i in range(N):            # synapses j -> i, contiguous over j
                    gni, gdi = gn[i], gd[i]
                    for j in range(N):
                        s = sg[i * N + j]
                        d = v[j] - muT[i, j]
                        ga = gni * erevT[i, j] + gdi
                        gerevT[b, i, j] += gni * wT[i, j] * s
                        gwT[b, i, j] += ga * s
                        gz = ga * wT[i, j] * s * (1.0 - s)
                        gsigT[b, i, j] += gz * d
                        gmuT[b, i, j] -= gz * sigT[i, j]
                        gv[j] += gz * sigT[i, j]
        for i in range(N):
            gv0[b, i] = gv[i]


class _Recurrence(torch.autograd.Function):
    """v [T, B, N] from (v0, c, num_s, den_s, w, sigma, mu, erev, gleak, vleak)."""

    @staticmethod
    def forward(ctx, v0, c, ns, ds, w, sig, mu, erev, gl, vl, eps, n_unf):
        CALLS["fwd"] += 1
        T, B, N = c.shape
        traj = torch.full((T, B, N), float("nan"), dtype=c.dtype)  # every entry is written
        arrs = [t.detach().contiguous() for t in (v0, c, ns, ds)]
        arrs += [t.detach().t().contiguous() for t in (w, sig, mu, erev)]  # [i, j] = j -> i
        arrs += [t.detach().contiguous() for t in (gl, vl)]
        if T > 0:
            _fwd(*[a.numpy() for a in arrs], float(eps), int(n_unf), traj.numpy())
        ctx.save_for_backward(*arrs, traj)
        ctx.eps, ctx.n_unf = float(eps), int(n_unf)
        return traj

    @staticmethod
    def backward(ctx, gtraj):
        CALLS["bwd"] += 1
        v0, c, ns, ds, wT, sigT, muT, erevT, gl, vl, traj = ctx.saved_tensors
        T, B, N = c.shape
        z = lambda *s: torch.zeros(*s, dtype=c.dtype)
        gv0, gc, gns, gds = z(B, N), z(T, B, N), z(T, B, N), z(T, B, N)
        gw, gsig, gmu, gerev = z(B, N, N), z(B, N, N), z(B, N, N), z(B, N, N)
        ggl, gvl = z(B, N), z(B, N)
        if T > 0:
            gtr = gtraj.detach().to(c.dtype).contiguous()
            _bwd(*[a.numpy() for a in (v0, traj, gtr, c, ns, ds, wT, sigT, muT, erevT, gl, vl)],
                 ctx.eps, ctx.n_unf, *[g.numpy() for g in (gv0, gc, gns, gds, gw, gsig, gmu,
                                                           gerev, ggl, gvl)])
        return (gv0, gc, gns, gds, *[g.sum(0).t() for g in (gw, gsig, gmu, gerev)],
                ggl.sum(0), gvl.sum(0), None, None)


def run(x: torch.Tensor, state: K.LTCState, p: K.LTCParams, record: bool = False,
        timespans: torch.Tensor | None = None):
    """Same contract as :func:`spiking.kernels.ltc.reference`, fused over time on the CPU."""
    T, B, _ = x.shape
    N = p.cm.shape[-1]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    cast = lambda t: t.to(dtype)
    xs = x.to(dtype)
    num_s, den_s = K.sensory_drive(K.map_inputs(xs, p), p)            # [T, B, N]
    if timespans is None:
        delta = torch.full((T, B, 1), float(p.dt), dtype=dtype)
    else:
        ts = cast(timespans)
        delta = ts.reshape(T, 1, 1).expand(T, B, 1) if ts.dim() == 1 else ts.reshape(T, B, 1)
    c = (cast(p.cm) / (delta / p.ode_unfolds)).expand(T, B, N)
    traj = _Recurrence.apply(cast(state.v), c, num_s.expand(T, B, N), den_s.expand(T, B, N),
                             cast(p.w), cast(p.sigma), cast(p.mu), cast(p.erev), cast(p.gleak),
                             cast(p.vleak), p.eps, p.ode_unfolds)
    out = K.map_outputs(traj, p).to(x.dtype)
    final = K.LTCState(traj[-1] if T > 0 else state.v)
    if not record:
        return out, final
    return out, final, K.LTCState(traj)
