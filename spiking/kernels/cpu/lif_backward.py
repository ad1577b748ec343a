"""Backward kernels of the fused CPU LIF family (BPTT through the surrogate).

The math, the memory kept for backward and the kernel choice (``_BWD_PLAIN[surrogate id]``
for plain LIF, ``_bwd`` for the rest) are documented in :mod:`spiking.kernels.cpu.lif`, whose
``backward_kernel`` calls these; the block helpers are shared with its forward kernels.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from spiking.kernels.cpu.lif import BWD_BLOCK, _add_row, _at, _block_params, _block_state, _pblock

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


def _plain_kernel_for(sid):
    """The backward kernel of plain LIF (no synapse, no adaptation, no reset delay) for the
    surrogate ``sid``, a compile-time constant: a closure, so that the surrogate's code is
    inlined into the step loop (numba freezes ``sid``, LLVM drops the other surrogates) and only
    the kernels of the surrogates in use are compiled. (A closure over the surrogate function
    itself or a function passed as an argument would make the kernel uncacheable.)"""
    @numba.njit(parallel=True, cache=True, error_model="numpy")
    def kernel(g_out, g_vT, g_vtr, has_g, v0, h_st, x, has_x, am, th, g, vl, vr, reset, k1, k2,
               need, gx, gv0, gp, one, zero, block):
        T, M = h_st.shape
        sub = reset == 0
        imm_zero = reset == 1
        keep_h = reset == 2
        need_am, need_th, need_vl = need[0], need[1], need[6]
        need_g = need[5] and has_x
        need_vr = need[7] and imm_zero
        pg = need_am or need_th or need_g or need_vl or need_vr
        for b in numba.prange((M + block - 1) // block):
            j0 = b * block
            n = min(block, M - j0)
            p_am, p_th, p_g = _pblock(am, j0, n), _pblock(th, j0, n), _pblock(g, j0, n)
            p_vl, p_vr = _pblock(vl, j0, n), _pblock(vr, j0, n)
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
                    _add_row(gvb, g_vtr, t, j0, n)
                hr = h_st[t, j0:j0 + n]
                go = g_out[t % g_out.shape[0], j0:j0 + n] if has_g[0] else zb
                gxr = gx[t, j0:j0 + n]
                if not pg:  # the step: 3 streams (h, grad_out -> grad_x) and the adjoint gv
                    for jj in range(n):
                        z = hr[jj] - _at(p_th, jj)
                        s = one if z > zero else zero
                        gv = gvb[jj]
                        gh = gv * (one - s) if imm_zero else gv
                        gh += go[jj] * _surrogate(sid, z, k1, k2, one, zero)
                        gxr[jj] = _at(p_g, jj) * gh
                        gvb[jj] = _at(p_am, jj) * gh
                    continue
                if need_vr:
                    for jj in range(n):
                        gvo[jj] = gvb[jj]
                for jj in range(n):  # the same, keeping gh and g_theta
                    z = hr[jj] - _at(p_th, jj)
                    s = one if z > zero else zero
                    gv = gvb[jj]
                    gh = gv * (one - s) if imm_zero else gv
                    g_theta = -(s * gv) if sub else zero
                    gz = go[jj] * _surrogate(sid, z, k1, k2, one, zero)
                    gh += gz
                    ghb[jj] = gh
                    gtb[jj] = g_theta - gz
                    gxr[jj] = _at(p_g, jj) * gh
                    gvb[jj] = _at(p_am, jj) * gh
                if need_th:
                    for jj in range(n):
                        d_th[jj] += gtb[jj]
                if need_vr:
                    for jj in range(n):
                        s = one if hr[jj] - _at(p_th, jj) > zero else zero
                        d_vr[jj] += gvo[jj] * s
                if need_vl:
                    for jj in range(n):
                        d_vl[jj] += ghb[jj] * (one - _at(p_am, jj))
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
                            s_p = one if hp[jj] - _at(p_th, jj) > zero else zero
                            v_sub = hp[jj] - _at(p_th, jj) * s_p
                            v_zero = hp[jj] * (one - s_p) + _at(p_vr, jj) * s_p
                            vp[jj] = v_sub if sub else v_zero
                    for jj in range(n):
                        d_am[jj] += ghb[jj] * (vp[jj] - _at(p_vl, jj))
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
                _add_row(gvb, g_vtr, t, j0, n)
            if syn and has_g[5]:
                _add_row(gib, g_itr, t, j0, n)
            if ada and has_g[6]:
                _add_row(gab, g_atr, t, j0, n)
            hr = h_st[t, j0:j0 + n]
            go = g_out[t % g_out.shape[0], j0:j0 + n] if has_g[0] else zb
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
