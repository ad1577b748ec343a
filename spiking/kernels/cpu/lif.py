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

Backward kernels: ``_BWD_PLAIN[surrogate id]`` for plain LIF (no synapse, no adaptation, no
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

import math

import numba
import numpy as np
import torch

from spiking.kernels import fused

CALLS = {"fwd": 0, "bwd": 0}  # sentinel for tests: incremented by every fused run
# Neurons per block: prange runs over blocks; inside, the time loop runs over the block's
# neurons in an innermost loop that the compiler vectorises (a per-neuron loop over T is bound
# by the latency of the recurrence and measured ~15x slower on the benchmark shape).
BLOCK = 256
# Neurons per block of the backward kernels: longer inner loops amortise the per-step setup
# (runtime alias checks of the vectorised loop), measured ~25% faster than 256 on the benchmark.
BWD_BLOCK = 512


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
# the absent variables' rows. Measured ~3x faster than _fwd on the benchmark shape.
@numba.njit(parallel=True, cache=True, error_model="numpy")
def _fwd_plain(x, v0, am, th, g, vl, vr, reset, out, vT, h_st, one, zero):
    T, M = x.shape
    keep_h = reset == 2
    sub = reset == 0
    for b in numba.prange((M + BLOCK - 1) // BLOCK):
        j0 = b * BLOCK
        n = min(BLOCK, M - j0)
        p_am, p_th, p_g = np.empty(n, x.dtype), np.empty(n, x.dtype), np.empty(n, x.dtype)
        p_vr, c_leak, vb = np.empty(n, x.dtype), np.empty(n, x.dtype), np.empty(n, x.dtype)
        for jj in range(n):
            j = j0 + jj
            p_am[jj] = am[j % am.shape[0]]
            p_th[jj] = th[j % th.shape[0]]
            p_g[jj] = g[j % g.shape[0]]
            p_vr[jj] = vr[j % vr.shape[0]]
            c_leak[jj] = (one - p_am[jj]) * vl[j % vl.shape[0]]
            vb[jj] = v0[j]
        for t in range(T):
            xr = x[t, j0:j0 + n]
            hr = h_st[t, j0:j0 + n]
            orow = out[t, j0:j0 + n]
            for jj in range(n):
                h = p_am[jj] * vb[jj] + c_leak[jj] + p_g[jj] * xr[jj]
                hr[jj] = h
                s = one if h - p_th[jj] > zero else zero
                v_sub = h - p_th[jj] * s
                v_zero = h * (one - s) + p_vr[jj] * s
                vb[jj] = h if keep_h else (v_sub if sub else v_zero)
                orow[jj] = s
        for jj in range(n):
            vT[j0 + jj] = vb[jj]


# ---- backward ---------------------------------------------------------------------------------
# Surrogate derivatives g(z) as scalar functions (kernel_id of spiking/surrogate.py: 0 .. 4); the
# constants k1, k2 come from spiking.kernels.fused.surrogate_consts.

@numba.njit(cache=True, error_model="numpy")
def _sg_atan(z, k1, k2, one, zero):  # (a/2) / (1 + (pi/2 a z)^2)
    u = k2 * z
    return k1 / (one + u * u)


@numba.njit(cache=True, error_model="numpy")
def _sg_fast_sigmoid(z, k1, k2, one, zero):  # 1 / (1 + a|z|)^2
    dd = one + k1 * abs(z)
    return one / (dd * dd)


@numba.njit(cache=True, error_model="numpy")
def _sg_sigmoid(z, k1, k2, one, zero):  # a sig(az) (1 - sig(az))
    sg = one / (one + math.exp(-(k1 * z)))
    return k1 * sg * (one - sg)


@numba.njit(cache=True, error_model="numpy")
def _sg_triangle(z, k1, k2, one, zero):  # a max(0, 1 - a|z|)
    return k1 * max(zero, one - k1 * abs(z))


@numba.njit(cache=True, error_model="numpy")
def _sg_straight_through(z, k1, k2, one, zero):  # a/2 where |z| < 1/a
    return k1 if abs(z) < k2 else zero


@numba.njit(cache=True, error_model="numpy")
def _surrogate(sid, z, k1, k2, one, zero):
    """g(z) for the built-in surrogate ``sid`` (a constant where it is called in a loop)."""
    if sid == 0:
        return _sg_atan(z, k1, k2, one, zero)
    if sid == 1:
        return _sg_fast_sigmoid(z, k1, k2, one, zero)
    if sid == 2:
        return _sg_sigmoid(z, k1, k2, one, zero)
    if sid == 3:
        return _sg_triangle(z, k1, k2, one, zero)
    return _sg_straight_through(z, k1, k2, one, zero)


@numba.njit(cache=True, error_model="numpy")
def _surrogate_block(z, out, n, sid, k1, k2, one, zero):
    """out[:n] = g(z[:n]) for the built-in surrogate ``sid``, one vectorisable loop per kind."""
    if sid == 0:
        for jj in range(n):
            out[jj] = _sg_atan(z[jj], k1, k2, one, zero)
    elif sid == 1:
        for jj in range(n):
            out[jj] = _sg_fast_sigmoid(z[jj], k1, k2, one, zero)
    elif sid == 2:
        for jj in range(n):
            out[jj] = _sg_sigmoid(z[jj], k1, k2, one, zero)
    elif sid == 3:
        for jj in range(n):
            out[jj] = _sg_triangle(z[jj], k1, k2, one, zero)
    else:
        for jj in range(n):
            out[jj] = _sg_straight_through(z[jj], k1, k2, one, zero)


@numba.njit(cache=True, error_model="numpy")
def _block_param(p, j0, n):
    """Parameter p (period P: p[j % P]) of neurons j0 .. j0+n-1."""
    q = np.empty(n, p.dtype)
    for jj in range(n):
        q[jj] = p[(j0 + jj) % p.shape[0]]
    return q


def _plain_kernel_for(sid):
    """The backward kernel of plain LIF (no synapse, no adaptation, no reset delay) for the
    surrogate ``sid``, a compile-time constant: a closure, so that the surrogate's code is
    inlined into the step loop (numba freezes ``sid``, LLVM drops the other surrogates) and only
    the kernels of the surrogates in use are compiled. (A closure over the surrogate function
    itself or a function passed as an argument would make the kernel uncacheable.)"""
    @numba.njit(parallel=True, cache=True, error_model="numpy")
    def kernel(g_out, g_vT, g_vtr, has_g, v0, h_st, x, has_x, am, th, g, vl, vr, reset, k1, k2,
               need, gx, gv0, gp, one, zero):
        T, M = h_st.shape
        sub = reset == 0
        imm_zero = reset == 1
        keep_h = reset == 2
        need_am, need_th, need_vl = need[0], need[1], need[6]
        need_g = need[5] and has_x
        need_vr = need[7] and imm_zero
        pg = need_am or need_th or need_g or need_vl or need_vr
        for b in numba.prange((M + BWD_BLOCK - 1) // BWD_BLOCK):
            j0 = b * BWD_BLOCK
            n = min(BWD_BLOCK, M - j0)
            p_am, p_th, p_g = (_block_param(am, j0, n), _block_param(th, j0, n),
                               _block_param(g, j0, n))
            p_vl, p_vr = _block_param(vl, j0, n), _block_param(vr, j0, n)
            zb = np.zeros(n, h_st.dtype)
            gvb = _block_state(g_vT, has_g[1], j0, n, zero)
            v0b = _block_state(v0, need_am, j0, n, zero)
            d_am, d_th, d_g, d_vl, d_vr = zb.copy(), zb.copy(), zb.copy(), zb.copy(), zb.copy()
            ghb = np.empty(n, h_st.dtype)  # gh of the step
            gtb = np.empty(n, h_st.dtype)  # g_theta of the step
            gvo = np.empty(n, h_st.dtype)  # gv entering the step
            vp = np.empty(n, h_st.dtype)  # v[t-1]
            for t in range(T - 1, -1, -1):
                if has_g[4]:
                    row = g_vtr[t, j0:j0 + n]
                    for jj in range(n):
                        gvb[jj] += row[jj]
                hr = h_st[t, j0:j0 + n]
                go = g_out[t, j0:j0 + n] if has_g[0] else zb
                gxr = gx[t, j0:j0 + n]
                if not pg:  # the step: 3 streams (h, grad_out -> grad_x) and the adjoint gv
                    for jj in range(n):
                        z = hr[jj] - p_th[jj]
                        s = one if z > zero else zero
                        gv = gvb[jj]
                        gh = gv * (one - s) if imm_zero else gv
                        gh += go[jj] * _surrogate(sid, z, k1, k2, one, zero)
                        gxr[jj] = p_g[jj] * gh
                        gvb[jj] = p_am[jj] * gh
                    continue
                if need_vr:
                    for jj in range(n):
                        gvo[jj] = gvb[jj]
                for jj in range(n):  # the same, keeping gh and g_theta
                    z = hr[jj] - p_th[jj]
                    s = one if z > zero else zero
                    gv = gvb[jj]
                    gh = gv * (one - s) if imm_zero else gv
                    g_theta = -(s * gv) if sub else zero
                    gz = go[jj] * _surrogate(sid, z, k1, k2, one, zero)
                    gh += gz
                    ghb[jj] = gh
                    gtb[jj] = g_theta - gz
                    gxr[jj] = p_g[jj] * gh
                    gvb[jj] = p_am[jj] * gh
                if need_th:
                    for jj in range(n):
                        d_th[jj] += gtb[jj]
                if need_vr:
                    for jj in range(n):
                        s = one if hr[jj] - p_th[jj] > zero else zero
                        d_vr[jj] += gvo[jj] * s
                if need_vl:
                    for jj in range(n):
                        d_vl[jj] += ghb[jj] * (one - p_am[jj])
                if need_g:
                    xr = x[t, j0:j0 + n]
                    for jj in range(n):
                        d_g[jj] += ghb[jj] * xr[jj]
                if need_am:  # recompute v[t-1] from h[t-1] with the forward's arithmetic
                    if t == 0:
                        for jj in range(n):
                            vp[jj] = v0b[jj]
                    elif keep_h:
                        hp = h_st[t - 1, j0:j0 + n]
                        for jj in range(n):
                            vp[jj] = hp[jj]
                    else:
                        hp = h_st[t - 1, j0:j0 + n]
                        for jj in range(n):
                            s_p = one if hp[jj] - p_th[jj] > zero else zero
                            v_sub = hp[jj] - p_th[jj] * s_p
                            v_zero = hp[jj] * (one - s_p) + p_vr[jj] * s_p
                            vp[jj] = v_sub if sub else v_zero
                    for jj in range(n):
                        d_am[jj] += ghb[jj] * (vp[jj] - p_vl[jj])
            for jj in range(n):
                gv0[j0 + jj] = gvb[jj]
                gp[0, j0 + jj] = d_am[jj]
                gp[1, j0 + jj] = d_th[jj]
                gp[2, j0 + jj] = zero
                gp[3, j0 + jj] = zero
                gp[4, j0 + jj] = zero
                gp[5, j0 + jj] = d_g[jj]
                gp[6, j0 + jj] = d_vl[jj]
                gp[7, j0 + jj] = d_vr[jj]
    return kernel


# Plain LIF, the common case, has its own kernels (index: surrogate kernel_id): per step one
# loop over 3 streams (h, grad_out -> grad_x) and the block's adjoint with the surrogate
# inlined; parameter gradients, only those wanted, are accumulated in separate short loops, one
# per parameter, from the step's gh and g_theta.
_BWD_PLAIN = tuple(_plain_kernel_for(sid) for sid in range(5))


@numba.njit(cache=True, error_model="numpy")
def _adjoint(s, sgv, r, gv, gi, ga, go, aj, aa, am, g, asy, syn, ada, imm_zero, imm_sub, r_zero,
             cfirst, one, zero):
    """One neuron-step of the general backward: the adjoints entering step t-1 (gv, gi, ga),
    grad x[t], and gh, g_theta of the step (for the parameter gradients)."""
    gh = gv * (one - s) if imm_zero else gv
    g_theta = -(s * gv) if imm_sub else zero
    gs = go + aj * ga if ada else go
    gz = gs * sgv
    gh += gz
    g_theta -= gz
    ga_new = aa * (ga + g_theta) if ada else zero
    gv_in = am * gh
    gv_new = gv_in * (one - r) if r_zero else gv_in
    gdrive = g * gh
    gtot = gi + gdrive if cfirst else gi
    gi_new = asy * gtot if cfirst else asy * gtot + gdrive
    return (gv_new, gi_new if syn else zero, ga_new, gtot if syn else gdrive, gh, g_theta)


# General case (synapse, adaptation or reset delay). The step's adjoint update is one loop;
# each wanted parameter gradient is accumulated in its own short loop afterwards (from gh,
# g_theta and the adjoints entering the step), so that no loop carries the 8 accumulators.
@numba.njit(parallel=True, cache=True, error_model="numpy")
def _bwd(g_out, g_vT, g_iT, g_aT, g_vtr, g_itr, g_atr, has_g, v0, i0, a0, h_st, i_st, a_st, x,
         has_x, am, th, asy, aad, aj, g, vl, vr, syn, ada, reset, delay, cfirst, sid, k1, k2,
         need, gx, gv0, gi0, ga0, gp, one, zero):
    T, M = h_st.shape
    r_zero = delay and reset == 1
    r_sub = delay and reset == 0
    keep_h = delay or reset == 2
    sub = reset == 0
    imm_sub = not keep_h and sub  # immediate subtract reset
    imm_zero = not keep_h and not sub  # immediate zero reset
    need_am, need_th, need_vl = need[0], need[1], need[6]
    need_as = need[2] and syn
    need_aa, need_aj = need[3] and ada, need[4] and ada
    need_g = need[5] and (syn or has_x)
    need_vr = need[7] and (imm_zero or r_zero)
    need_pg = (need_am or need_th or need_as or need_aa or need_aj or need_g or need_vl
               or need_vr)
    need_vp = r_zero or need_am or (r_sub and need_th)  # v[t-1] (and r) wanted
    for b in numba.prange((M + BWD_BLOCK - 1) // BWD_BLOCK):
        j0 = b * BWD_BLOCK
        n = min(BWD_BLOCK, M - j0)
        q = _block_params(j0, n, am, th, asy, aad, aj, g, vl, vr)
        p_am, p_th, p_as, p_aa = q[0], q[1], q[2], q[3]
        p_aj, p_g, p_vl, p_vr = q[4], q[5], q[6], q[7]
        zb = np.zeros(n, h_st.dtype)
        v0b = _block_state(v0, True, j0, n, zero)
        i0b = _block_state(i0, syn, j0, n, zero)
        a0b = _block_state(a0, ada, j0, n, zero)
        gvb = _block_state(g_vT, has_g[1], j0, n, zero)
        gib = _block_state(g_iT, has_g[2], j0, n, zero)
        gab = _block_state(g_aT, has_g[3], j0, n, zero)
        # per-neuron parameter gradients, one array each (rows of one 2D array defeat the
        # vectoriser's alias analysis)
        d_am, d_th, d_as, d_aa = zb.copy(), zb.copy(), zb.copy(), zb.copy()
        d_aj, d_g, d_vl, d_vr = zb.copy(), zb.copy(), zb.copy(), zb.copy()
        vp = zb.copy()
        z = np.empty(n, h_st.dtype)
        sg = np.empty(n, h_st.dtype)
        ghb = np.empty(n, h_st.dtype)  # gh of the step
        gtb = np.empty(n, h_st.dtype)  # g_theta of the step
        gvo = np.empty(n, h_st.dtype)  # adjoints entering the step
        gio = np.empty(n, h_st.dtype)
        gao = np.empty(n, h_st.dtype)
        for t in range(T - 1, -1, -1):
            if has_g[4]:
                row = g_vtr[t, j0:j0 + n]
                for jj in range(n):
                    gvb[jj] += row[jj]
            if syn and has_g[5]:
                row = g_itr[t, j0:j0 + n]
                for jj in range(n):
                    gib[jj] += row[jj]
            if ada and has_g[6]:
                row = g_atr[t, j0:j0 + n]
                for jj in range(n):
                    gab[jj] += row[jj]
            hr = h_st[t, j0:j0 + n]
            go = g_out[t, j0:j0 + n] if has_g[0] else zb
            a_p = (a_st[t - 1, j0:j0 + n] if t > 0 else a0b) if ada else zb
            # recompute v[t-1] from h[t-1] with the forward's arithmetic
            if need_vp:
                if t == 0:
                    for jj in range(n):
                        vp[jj] = v0b[jj]
                else:
                    hp = h_st[t - 1, j0:j0 + n]
                    if keep_h:
                        for jj in range(n):
                            vp[jj] = hp[jj]
                    else:
                        a_pp = (a_st[t - 2, j0:j0 + n] if t > 1 else a0b) if ada else zb
                        for jj in range(n):
                            theta_p = p_th[jj] + p_aa[jj] * a_pp[jj] if ada else p_th[jj]
                            s_p = one if hp[jj] - theta_p > zero else zero
                            v_sub = hp[jj] - theta_p * s_p
                            v_zero = hp[jj] * (one - s_p) + p_vr[jj] * s_p
                            vp[jj] = v_sub if sub else v_zero
            if ada:
                for jj in range(n):
                    z[jj] = hr[jj] - (p_th[jj] + p_aa[jj] * a_p[jj])
            else:
                for jj in range(n):
                    z[jj] = hr[jj] - p_th[jj]
            _surrogate_block(z, sg, n, sid, k1, k2, one, zero)
            gxr = gx[t, j0:j0 + n]
            if not need_pg:
                for jj in range(n):
                    s = one if z[jj] > zero else zero
                    r = one if vp[jj] - p_th[jj] > zero else zero
                    gvb[jj], gib[jj], gab[jj], gxr[jj], _, _ = _adjoint(
                        s, sg[jj], r, gvb[jj], gib[jj], gab[jj], go[jj], p_aj[jj], p_aa[jj],
                        p_am[jj], p_g[jj], p_as[jj], syn, ada, imm_zero, imm_sub, r_zero, cfirst,
                        one, zero)
                continue
            for jj in range(n):
                gvo[jj] = gvb[jj]
                gio[jj] = gib[jj]
                gao[jj] = gab[jj]
            for jj in range(n):
                s = one if z[jj] > zero else zero
                r = one if vp[jj] - p_th[jj] > zero else zero
                gvb[jj], gib[jj], gab[jj], gxr[jj], ghb[jj], gtb[jj] = _adjoint(
                    s, sg[jj], r, gvo[jj], gio[jj], gao[jj], go[jj], p_aj[jj], p_aa[jj],
                    p_am[jj], p_g[jj], p_as[jj], syn, ada, imm_zero, imm_sub, r_zero, cfirst,
                    one, zero)
            # parameter gradients, in the reference derivation's order per accumulator
            if need_am:
                for jj in range(n):
                    r = one if vp[jj] - p_th[jj] > zero else zero
                    v_in = vp[jj] * (one - r) + p_vr[jj] * r if r_zero else vp[jj]
                    d_am[jj] += ghb[jj] * (v_in - p_vl[jj])
            if need_th:
                if r_sub:
                    for jj in range(n):
                        r = one if vp[jj] - p_th[jj] > zero else zero
                        d_th[jj] += gtb[jj]
                        d_th[jj] -= ghb[jj] * r
                else:
                    for jj in range(n):
                        d_th[jj] += gtb[jj]
            if need_as:
                i_p = i_st[t - 1, j0:j0 + n] if t > 0 else i0b
                for jj in range(n):
                    gtot = gio[jj] + p_g[jj] * ghb[jj] if cfirst else gio[jj]
                    d_as[jj] += gtot * i_p[jj]
            if need_aa:
                for jj in range(n):
                    d_aa[jj] += (gao[jj] + gtb[jj]) * a_p[jj]
            if need_aj:
                for jj in range(n):
                    s = one if z[jj] > zero else zero
                    d_aj[jj] += gao[jj] * s
            if need_g:
                if syn:
                    src = i_st[t, j0:j0 + n] if cfirst else (i_st[t - 1, j0:j0 + n] if t > 0
                                                               else i0b)
                else:
                    src = x[t, j0:j0 + n]
                for jj in range(n):
                    d_g[jj] += ghb[jj] * src[jj]
            if need_vl:
                for jj in range(n):
                    d_vl[jj] += ghb[jj] * (one - p_am[jj])
            if need_vr:
                if imm_zero:
                    for jj in range(n):
                        s = one if z[jj] > zero else zero
                        d_vr[jj] += gvo[jj] * s
                else:
                    for jj in range(n):
                        r = one if vp[jj] - p_th[jj] > zero else zero
                        d_vr[jj] += p_am[jj] * ghb[jj] * r
        for jj in range(n):
            gv0[j0 + jj] = gvb[jj]
            if syn:
                gi0[j0 + jj] = gib[jj]
            if ada:
                ga0[j0 + jj] = gab[jj]
            gp[0, j0 + jj] = d_am[jj]
            gp[1, j0 + jj] = d_th[jj]
            gp[2, j0 + jj] = d_as[jj]
            gp[3, j0 + jj] = d_aa[jj]
            gp[4, j0 + jj] = d_aj[jj]
            gp[5, j0 + jj] = d_g[jj]
            gp[6, j0 + jj] = d_vl[jj]
            gp[7, j0 + jj] = d_vr[jj]


def _np(t, dtype, ndim):
    """A numpy view of an optional tensor (an empty array of the right rank when absent)."""
    if t is None or t.numel() == 0:
        return np.empty((0,) * ndim, dtype=dtype)
    return t.detach().contiguous().numpy()


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
    p = [_np(q, dt, 1) for q in params]
    if not (syn or ada or cfg[3] or record):
        _fwd_plain(_np(x, dt, 2), _np(v0, dt, 1), p[0], p[1], p[5], p[6], p[7], cfg[2],
                   out.numpy(), vT.numpy(), h.numpy(), one, zero)
        return out, vT, iT, aT, h, i_st, a_st, v_tr, i_tr, a_tr
    _fwd(_np(x, dt, 2), _np(v0, dt, 1), _np(i0, dt, 1), _np(a0, dt, 1), *p, syn, ada, cfg[2],
         bool(cfg[3]), bool(cfg[4]), bool(record), out.numpy(), vT.numpy(), _np(iT, dt, 1),
         _np(aT, dt, 1), h.numpy(), _np(i_st, dt, 2), _np(a_st, dt, 2), _np(v_tr, dt, 2),
         _np(i_tr, dt, 2), _np(a_tr, dt, 2), one, zero)
    return out, vT, iT, aT, h, i_st, a_st, v_tr, i_tr, a_tr


def backward_kernel(g_out, g_vT, g_iT, g_aT, g_vtr, g_itr, g_atr, v0, i0, a0, h, i_st, a_st, x,
                    params, cfg, sur_alpha):
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
    p = [_np(q, dt, 1) for q in params]
    if not (syn or ada or delay):
        _BWD_PLAIN[cfg[5]](_np(g_out, dt, 2), _np(g_vT, dt, 1), _np(g_vtr, dt, 2), has_g,
                           _np(v0, dt, 1), _np(h, dt, 2), _np(x, dt, 2), x is not None, p[0],
                           p[1], p[5], p[6], p[7], cfg[2], dt.type(k1), dt.type(k2), need,
                           gx.numpy(), gv0.numpy(), gp.numpy(), one, zero)
        return gx, gv0, gi0, ga0, gp
    _bwd(_np(g_out, dt, 2), _np(g_vT, dt, 1), _np(g_iT, dt, 1), _np(g_aT, dt, 1),
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
