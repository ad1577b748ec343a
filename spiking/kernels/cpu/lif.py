r"""Fused CPU (numba) kernels of the LIF family: the whole time loop in one parallel kernel.

The update is exactly the one of :mod:`spiking.kernels.lif` (read its docstring: it is the
spec), evaluated in the same operation order so that float32/float64 forward results are
bitwise equal to the reference loop. ``numba.prange`` splits the ``M = B * N * ...`` neurons
of one step into blocks of ``BLOCK`` neurons over threads; each block runs the ``T`` steps with
its ``v, i, a`` in block-local arrays and the block's neurons in the innermost, vectorised loop
(``error_model="numpy"`` so that divisions carry no Python zero-check and vectorise).

Backward (BPTT through the surrogate ``g``, Zenke & Vogels 2021 / Neftci et al. 2019),
per step in reverse with adjoints ``gv, gi, ga`` of ``v[t], i[t], a[t]`` (plus the gradient
of the recorded trajectory at ``t`` when ``record=True``), ``z = h - theta_t``:

.. code-block:: text

    gh = gv (subtract / none / reset_delay),  gv * (1 - s) (zero);  g_vreset += gv * s (zero)
    g_theta = -s * gv (subtract, immediate reset)
    gs = grad_out[t] + adapt_jump * ga;  g_adapt_jump += ga * s;  ga_dec = ga
    gz = gs * g(z);  gh += gz;  g_theta -= gz;  g_threshold += g_theta;  ga_dec += g_theta
    g_alpha_adapt += ga_dec * a[t-1];  ga <- alpha_adapt * ga_dec
    g_alpha_mem += gh * (v_in - v_leak);  g_v_leak += gh * (1 - alpha_mem);  g_gain += gh * drive
    g_threshold -= gh * r (delayed subtract);  gv <- alpha_mem * gh * (1 - r) (delayed zero)
                                                       else alpha_mem * gh;  g_vreset += ... * r
    gdrive = gain * gh;  with a synapse: gx = gi + gdrive (current_first) or gi (else),
    g_alpha_syn += gx * i[t-1];  gi <- alpha_syn * gx (+ gdrive if not current_first)

Backward kernels (in :mod:`spiking.kernels.cpu.lif_backward`): ``_BWD_PLAIN[surrogate id]`` for plain LIF (no synapse, no adaptation, no
reset delay; the surrogate inlined) and ``_bwd`` for the rest. Per step, the adjoint update is
one vectorised loop over few arrays; the per-neuron parameter gradients are accumulated only
for the parameters that need one (bit mask ``cfg[7]`` of the backward op, from
``ctx.needs_input_grad``; the rows of the others are 0), each in its own short loop from the
step's ``gh`` and ``g_theta``, in the same operation order as above (bitwise the same sums).
A loop that carries all 8 accumulators next to the adjoints does not vectorise (too many
possibly aliasing arrays) and measured ~8x slower for LIF with fixed parameters.

Memory kept for backward, per neuron-step (compute dtype: 4 bytes for float32, 8 for float64):
the pre-reset membrane ``h`` (4 B); plus ``i`` with a synapse (+4 B) and ``a`` with adaptation
(+4 B): LIF 4 B, CubaLIF or ALIF 8 B, ALIF with synapse 12 B. Spikes are not stored: the
backward recomputes ``s = H(h - theta)`` and the previous membrane from ``h`` with the same
arithmetic as the forward, hence bitwise identically. The input ``x`` is kept only when the
input gain needs a gradient and there is no synapse (``normalize_input`` with learnable tau).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba.core import types
from numba.extending import overload

from spiking.kernels import fused

CALLS = {"fwd": 0, "bwd": 0}  # sentinel for tests: incremented by every fused run
# Neurons per block: prange runs over blocks; inside, the time loop runs over the block's
# neurons in an innermost loop that the compiler vectorises (a per-neuron loop over T is bound
# by the latency of the recurrence and measured ~15x slower on the benchmark shape).
BLOCK = 256
# Neurons per block of the backward kernels: longer inner loops amortise the per-step setup
# (runtime alias checks of the vectorised loop), measured ~25% faster than 256 on the benchmark.
BWD_BLOCK = 512
# Largest block of the plain-LIF kernels (plain_block): longer rows per step stream better;
# on the neuron benchmark (T=100, B*N=16384, 2 threads) the forward took 0.54, 0.44 and 0.39 ms
# with blocks of 256, 1024 and 4096 neurons (interleaved runs, medians).
PLAIN_BLOCK_MAX = 4096


@numba.njit(cache=True, error_model="numpy")
def _block_params(j0, n, am, th, asy, aad, aj, g, vl, vr):
    """The 8 parameters of neurons j0 .. j0+n-1 (read with period p[j % P]) as [8, n]."""
    q = np.empty((8, n), am.dtype)
    for jj in range(n):
        j = j0 + jj
        q[0, jj] = am[j % am.shape[0]]
        q[1, jj] = th[j % th.shape[0]]
        q[2, jj] = asy[j % asy.shape[0]]
        q[3, jj] = aad[j % aad.shape[0]]
        q[4, jj] = aj[j % aj.shape[0]]
        q[5, jj] = g[j % g.shape[0]]
        q[6, jj] = vl[j % vl.shape[0]]
        q[7, jj] = vr[j % vr.shape[0]]
    return q


@numba.njit(cache=True, error_model="numpy")
def _block_state(src, has, j0, n, zero):
    b = np.empty(n, src.dtype)
    for jj in range(n):
        b[jj] = src[j0 + jj] if has else zero
    return b


@numba.njit(cache=True, error_model="numpy", inline="always")
def _add_row(acc, src, t, j0, n):
    """acc[:n] += src[t, j0:j0+n] (a trajectory gradient entering a block's backward step)."""
    row = src[t, j0:j0 + n]
    for jj in range(n):
        acc[jj] += row[jj]


def _pblock(p, j0, n):
    """Parameter ``p`` of the neurons j0 .. j0+n-1 inside a kernel: an array of period P is
    expanded to the block (``p[j % P]``); a scalar (a parameter shared by all neurons) stays
    a scalar, so that the kernel is compiled for it with the value in a register."""
    raise NotImplementedError("only callable from numba-compiled code")


def _at(p, jj):
    """Element ``jj`` of a block parameter from :func:`_pblock` (the scalar itself)."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(_pblock)
def _ov_pblock(p, j0, n):
    if isinstance(p, types.Array):
        def expand(p, j0, n):
            q = np.empty(n, p.dtype)
            for jj in range(n):
                q[jj] = p[(j0 + jj) % p.shape[0]]
            return q
        return expand
    if isinstance(p, types.Float):
        return lambda p, j0, n: p
    return None


@overload(_at, inline="always")
def _ov_at(p, jj):
    if isinstance(p, types.Array):
        return lambda p, jj: p[jj]
    if isinstance(p, types.Float):
        return lambda p, jj: p
    return None


def plain_block(m, smallest, largest=PLAIN_BLOCK_MAX):
    """Neurons per block of the plain-LIF kernels over ``m`` neurons: about two blocks per
    thread (balance) within [smallest, largest], a multiple of 64."""
    per = -(-m // (2 * numba.get_num_threads()))
    return max(smallest, min(largest, -(-per // 64) * 64))


def plain_params(params, dt):
    """Parameters for the plain-LIF kernels: a scalar of dtype ``dt`` where a parameter is
    shared by all neurons (the scalar-specialised kernels measured ~2x faster on the neuron
    benchmark: fewer streams, no runtime alias checks), else the numpy array of period P."""
    return [dt.type(q.item()) if q.numel() == 1 else _np(q, dt, 1) for q in params]


# Inside a block, option flags are loop-invariant: each inner loop is straight-line code with
# selects (or the flag test hoisted around the loop), so that it vectorises.
@numba.njit(parallel=True, cache=True, error_model="numpy")
def _fwd(x, v0, i0, a0, am, th, asy, aad, aj, g, vl, vr, syn, ada, reset, delay, cfirst, record,
         out, vT, iT, aT, h_st, i_st, a_st, v_tr, i_tr, a_tr, one, zero):
    T, M = x.shape
    r_zero = delay and reset == 1  # delayed zero reset
    r_sub = delay and reset == 0  # delayed subtract reset
    keep_h = delay or reset == 2  # v[t] = h[t]
    sub = reset == 0
    for b in numba.prange((M + BLOCK - 1) // BLOCK):
        j0 = b * BLOCK
        n = min(BLOCK, M - j0)
        q = _block_params(j0, n, am, th, asy, aad, aj, g, vl, vr)
        p_am, p_th, p_as, p_aa, p_aj, p_g, p_vr = q[0], q[1], q[2], q[3], q[4], q[5], q[7]
        c_leak = np.empty(n, x.dtype)
        for jj in range(n):
            c_leak[jj] = (one - p_am[jj]) * q[6, jj]
        vb = _block_state(v0, True, j0, n, zero)
        ib = _block_state(i0, syn, j0, n, zero)
        ab = _block_state(a0, ada, j0, n, zero)
        # targets of the stores of absent state variables (distinct, so no two rows alias)
        scratch_i = np.empty(n, x.dtype)
        scratch_a = np.empty(n, x.dtype)
        for t in range(T):
            xr = x[t, j0:j0 + n]
            hr = h_st[t, j0:j0 + n]
            orow = out[t, j0:j0 + n]
            ir = i_st[t, j0:j0 + n] if syn else scratch_i
            ar = a_st[t, j0:j0 + n] if ada else scratch_a
            for jj in range(n):
                xt = xr[jj]
                i_old = ib[jj]
                i_new = p_as[jj] * i_old + xt
                drive = (i_new if cfirst else i_old) if syn else xt
                ib[jj] = i_new
                ir[jj] = i_new
                v = vb[jj]
                r = one if v - p_th[jj] > zero else zero
                v_in = v * (one - r) + p_vr[jj] * r if r_zero else v
                h = p_am[jj] * v_in + c_leak[jj] + p_g[jj] * drive
                h = h - p_th[jj] * r if r_sub else h
                hr[jj] = h
                a_dec = p_aa[jj] * ab[jj]
                theta = p_th[jj] + a_dec if ada else p_th[jj]
                s = one if h - theta > zero else zero
                a_new = a_dec + p_aj[jj] * s
                ab[jj] = a_new
                ar[jj] = a_new
                v_sub = h - theta * s
                v_zero = h * (one - s) + p_vr[jj] * s
                vb[jj] = h if keep_h else (v_sub if sub else v_zero)
                orow[jj] = s
            if record:
                vtr = v_tr[t, j0:j0 + n]
                for jj in range(n):
                    vtr[jj] = vb[jj]
                if syn:
                    itr = i_tr[t, j0:j0 + n]
                    for jj in range(n):
                        itr[jj] = ib[jj]
                if ada:
                    atr = a_tr[t, j0:j0 + n]
                    for jj in range(n):
                        atr[jj] = ab[jj]
        for jj in range(n):
            vT[j0 + jj] = vb[jj]
            if syn:
                iT[j0 + jj] = ib[jj]
            if ada:
                aT[j0 + jj] = ab[jj]


# Plain LIF (no synapse, no adaptation, no reset delay), no trajectory recorded: the same
# arithmetic as _fwd in the same order (bitwise equal results), with only the three rows a step
# needs (x in; h and s out) so that the inner loop vectorises without runtime alias checks over
# the absent variables' rows. Measured ~3x faster than _fwd on the benchmark shape. Parameters
# shared by all neurons arrive as scalars (plain_params; numba compiles one specialisation per
# mix of scalar and array parameters), and the block size grows with the layer (plain_block).
@numba.njit(parallel=True, cache=True, error_model="numpy")
def _fwd_plain(x, v0, am, th, g, vl, vr, reset, out, vT, h_st, one, zero, block):
    T, M = x.shape
    keep_h = reset == 2
    sub = reset == 0
    for b in numba.prange((M + block - 1) // block):
        j0 = b * block
        n = min(block, M - j0)
        p_am, p_th, p_g = _pblock(am, j0, n), _pblock(th, j0, n), _pblock(g, j0, n)
        p_vl, p_vr = _pblock(vl, j0, n), _pblock(vr, j0, n)
        vb = _block_state(v0, True, j0, n, zero)
        for t in range(T):
            xr = x[t, j0:j0 + n]
            hr = h_st[t, j0:j0 + n]
            orow = out[t, j0:j0 + n]
            for jj in range(n):
                c_leak = (one - _at(p_am, jj)) * _at(p_vl, jj)
                h = _at(p_am, jj) * vb[jj] + c_leak + _at(p_g, jj) * xr[jj]
                hr[jj] = h
                s = one if h - _at(p_th, jj) > zero else zero
                v_sub = h - _at(p_th, jj) * s
                v_zero = h * (one - s) + _at(p_vr, jj) * s
                vb[jj] = h if keep_h else (v_sub if sub else v_zero)
                orow[jj] = s
        for jj in range(n):
            vT[j0 + jj] = vb[jj]


def _np(t, dtype, ndim):
    """A numpy view of an optional tensor (an empty array of the right rank when absent)."""
    if t is None or t.numel() == 0:
        return np.empty((0,) * ndim, dtype=dtype)
    return t.detach().contiguous().numpy()


def _grad_rows(g, dt):
    """The gradient of the output ``[T, M]`` as numpy; one broadcast over time (stride 0, as
    the gradient of a sum or mean over steps, e.g. a spike-count loss, arrives) as its single
    row ``[1, M]``, which the kernels read for every step, instead of a materialised copy."""
    if fused.broadcast_over_time(g):
        g = g[:1]
    return _np(g, dt, 2)


def _scalars(dtype):
    return dtype.type(1), dtype.type(0)


def forward_kernel(x, v0, i0, a0, params, cfg, sur_alpha, record):
    CALLS["fwd"] += 1
    syn, ada = bool(cfg[0]), bool(cfg[1])
    T, M = x.shape
    dt = torch.empty(0, dtype=x.dtype).numpy().dtype
    out = fused.alloc(x.shape, x.dtype, "cpu")
    vT = fused.alloc(v0.shape, v0.dtype, "cpu")

    def opt(flag, shape):
        return fused.alloc(shape if flag else (0,), x.dtype, "cpu")
    iT, aT = opt(syn, (M,)), opt(ada, (M,))
    h = fused.alloc((T, M), x.dtype, "cpu")
    i_st, a_st = opt(syn, (T, M)), opt(ada, (T, M))
    v_tr, i_tr, a_tr = opt(record, (T, M)), opt(record and syn, (T, M)), opt(record and ada,
                                                                           (T, M))
    one, zero = _scalars(dt)
    if not (syn or ada or cfg[3] or record):
        am, th, _, _, _, g, vl, vr = plain_params(params, dt)
        _fwd_plain(_np(x, dt, 2), _np(v0, dt, 1), am, th, g, vl, vr, cfg[2], out.numpy(),
                   vT.numpy(), h.numpy(), one, zero, plain_block(M, BLOCK))
        return out, vT, iT, aT, h, i_st, a_st, v_tr, i_tr, a_tr
    p = [_np(q, dt, 1) for q in params]
    _fwd(_np(x, dt, 2), _np(v0, dt, 1), _np(i0, dt, 1), _np(a0, dt, 1), *p, syn, ada, cfg[2],
         bool(cfg[3]), bool(cfg[4]), bool(record), out.numpy(), vT.numpy(), _np(iT, dt, 1),
         _np(aT, dt, 1), h.numpy(), _np(i_st, dt, 2), _np(a_st, dt, 2), _np(v_tr, dt, 2),
         _np(i_tr, dt, 2), _np(a_tr, dt, 2), one, zero)
    return out, vT, iT, aT, h, i_st, a_st, v_tr, i_tr, a_tr


def backward_kernel(g_out, g_vT, g_iT, g_aT, g_vtr, g_itr, g_atr, v0, i0, a0, h, i_st, a_st, x,
                    params, cfg, sur_alpha):
    from spiking.kernels.cpu import lif_backward as B  # imports this module's block helpers
    CALLS["bwd"] += 1
    T, M = h.shape
    syn, ada, delay = bool(cfg[0]), bool(cfg[1]), bool(cfg[3])
    dt = torch.empty(0, dtype=h.dtype).numpy().dtype
    grads = (g_out, g_vT, g_iT, g_aT, g_vtr, g_itr, g_atr)
    has_g = np.array([gr is not None and gr.numel() > 0 for gr in grads], dtype=np.bool_)
    # which parameters need a gradient (bit k: fused.LIF_PARAMS[k]); rows of the others are 0
    mask = fused.param_grad_mask(cfg)
    need = np.array([bool(mask >> k & 1) for k in range(len(fused.LIF_PARAMS))], dtype=np.bool_)
    gx = fused.alloc((T, M), h.dtype, "cpu")
    gv0 = fused.alloc((M,), h.dtype, "cpu")
    gi0 = fused.alloc((M if syn else 0,), h.dtype, "cpu")
    ga0 = fused.alloc((M if ada else 0,), h.dtype, "cpu")
    gp = fused.alloc((len(fused.LIF_PARAMS), M), h.dtype, "cpu")
    k1, k2 = fused.surrogate_consts(cfg[5], sur_alpha)
    one, zero = _scalars(dt)
    if not (syn or ada or delay):
        am, th, _, _, _, g, vl, vr = plain_params(params, dt)
        B._BWD_PLAIN[cfg[5]](_grad_rows(g_out, dt), _np(g_vT, dt, 1), _np(g_vtr, dt, 2), has_g,
                           _np(v0, dt, 1), _np(h, dt, 2), _np(x, dt, 2), x is not None, am, th,
                           g, vl, vr, cfg[2], dt.type(k1), dt.type(k2), need, gx.numpy(),
                           gv0.numpy(), gp.numpy(), one, zero, plain_block(M, BWD_BLOCK))
        return gx, gv0, gi0, ga0, gp
    p = [_np(q, dt, 1) for q in params]
    B._bwd(_grad_rows(g_out, dt), _np(g_vT, dt, 1), _np(g_iT, dt, 1), _np(g_aT, dt, 1),
         _np(g_vtr, dt, 2), _np(g_itr, dt, 2), _np(g_atr, dt, 2), has_g, _np(v0, dt, 1),
         _np(i0, dt, 1), _np(a0, dt, 1), _np(h, dt, 2), _np(i_st, dt, 2), _np(a_st, dt, 2),
         _np(x, dt, 2), x is not None, *p, syn, ada, cfg[2], delay, bool(cfg[4]), cfg[5],
         dt.type(k1), dt.type(k2), need, gx.numpy(), gv0.numpy(), _np(gi0, dt, 1),
         _np(ga0, dt, 1), gp.numpy(), one, zero)
    return gx, gv0, gi0, ga0, gp


fused.register_kernel("lif_fwd", "cpu", forward_kernel)
fused.register_kernel("lif_bwd", "cpu", backward_kernel)


def run(x, state, p, record=False):
    """Fused CPU run; same signature and returns as :func:`spiking.kernels.lif.reference`."""
    return fused.run_lif(x, state, p, record, backend="cpu")
