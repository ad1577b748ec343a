r"""Fused CPU (numba) EGRU: forward and backward whose recurrent work follows the events.

The update is the one of :mod:`spiking.kernels.egru` (its docstring is the spec). ``R`` is kept
transposed, ``RT = weight_hh.T`` ``[H, 3H]``, so the column of unit ``j`` (its fan-out to the
three gates of every unit) is one contiguous row ``RT[j]``.

Forward, per sample (``numba.prange`` over the batch), per step: ``acc = wx[t]``; for each unit
``j`` active at ``t-1`` add ``RT[j, :2H] * y[t-1, j]``; ``r = sigmoid(acc_r)``; for each active
``j`` add ``RT[j, 2H:] * r[j] * y[t-1, j]``; then the elementwise update and the next active list.
Cost: ``O(H)`` elementwise + ``3H`` multiply-adds per event. In float32 (``_fwd32``) the
events are added two rows per pass and the gates' sigmoids run as vectorised loops with a
polynomial ``exp`` (``_sigmoid_rows``; libm's scalar ``expf`` does not vectorise in numba
without SVML); float64 keeps libm.

Backward (BPTT, reverse time, adjoints ``dc`` of ``c[t]``, ``gy`` of ``y[t]``):

.. code-block:: text

    f      = e + c * gamma g(c - theta)          (0 outside the backward support S[t])
    dc     = dc_next + gc_traj[t] + gy * f;      dtheta -= gy * c * gamma g(c - theta)
    da_u   = dc (z - c[t-1]) u (1 - u);  da_z = dc u (1 - z^2);  dc_next = dc (1 - u)
    q_j    = (R_z^T da_z)_j;  da_r_j = q_j y[t-1,j] r_j (1 - r_j)      (j active at t-1 only)
    gy[t-1]_k = gy_out[t-1]_k + (R_u^T da_u)_k + r_k q_k + (R_r^T da_r)_k - dc_k   (k in S[t-1])
    dR_u[:, j] += da_u y[t-1,j];  dR_z[:, j] += da_z r_j y[t-1,j];  dR_r[i, j] += da_r_i y[t-1,j]

``S[-1]`` is every unit (the gradient of the initial state ``y[-1]`` is dense). Cost: ``O(H)``
elementwise + ``2H`` per unit of ``S[t-1]`` (rows of ``RT``; this also gives ``q`` of the events,
which lie in ``S``) + ``H`` per event (the rows of ``R_r`` for ``R_r^T da_r``, two events per pass)
+ ``3H`` per event for ``dR`` (below). The batch is split into one chunk per thread, time runs
outside the chunk's samples so each row of ``RT`` is reused across them: for row ``k`` the chunk's
samples with ``k`` in ``S[t-1]`` are listed (branch-free from flags stored unit-major: about half
of the samples are in, so a branch would be mispredicted half of the time) and taken four per pass
(eight independent dot products sharing the loads of ``RT[k]``; one dot at a time is bound by the
latency of its add chain). ``dR`` is a sparse (events) x dense product over the gate adjoints
``dwx``: ``dR^T[j] += y[t-1, j] (da_u, da_r, r_j da_z)[t]``. As the reverse loop meets the events
it lists them per unit ``j``; every 4 steps (when ``t`` is a multiple of 4) it adds the listed
block to the rows ``dR^T[j]``, four events per pass (one load/store of the row per four events),
while the block's rows of ``dwx`` are still in cache. (Scattering each event into the rows in time
order streamed ``dR`` through the caches once per event; listing a block's events by scanning ``y``
column-wise after the loop cost a strided, mispredicted branch per unit-step.) Each chunk
accumulates its own ``dR``, ``dtheta`` (summed afterwards). Dot products and axpys are vectorised
(fastmath reassociation only, NaN/inf semantics kept), so float32 results differ from the reference
by rounding; ``tanh`` is evaluated as ``2 sigmoid(2a) - 1``.
Memory kept for backward: ``c, y, u, r, z`` per unit-step (5 values).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from spiking.kernels.egru import EGRUState, surrogate_consts

CALLS = {"fwd": 0, "bwd": 0}  # sentinel for tests: incremented by every fused run


@numba.njit(cache=True, inline="always")
def surrogate_grad(z, sid, k1, k2, one, zero):
    """The built-in surrogates of :mod:`spiking.surrogate` by kernel_id (k1, k2: see below)."""
    if sid == 0:  # atan: (a/2) / (1 + (pi/2 a z)^2)
        u = k2 * z
        return k1 / (one + u * u)
    if sid == 1:  # fast_sigmoid: 1 / (1 + a|z|)^2
        d = one + k1 * abs(z)
        return one / (d * d)
    if sid == 2:  # sigmoid: a sig(az) (1 - sig(az))
        sg = one / (one + math.exp(-(k1 * z)))
        return k1 * sg * (one - sg)
    if sid == 3:  # triangle: a max(0, 1 - a|z|)
        return k1 * max(zero, one - k1 * abs(z))
    return k1 if abs(z) < k2 else zero  # straight_through: a/2 where |z| < 1/a


# Reassociation lets the dot products and axpys vectorise; NaN/inf semantics are kept.
_FM = {"reassoc", "contract", "nsz"}


@numba.njit(cache=True, inline="always")
def _sigmoid(x, one):
    return one / (one + math.exp(-x))


@numba.njit(cache=True, inline="always")
def _events(y, act, zero):
    """Write the indices of the non-zero entries of ``y`` to ``act``; return their number."""
    n = 0
    for j in range(y.shape[0]):
        if y[j] != zero:
            act[n] = j
            n += 1
    return n


@numba.njit(parallel=True, cache=True, fastmath=_FM, error_model="numpy")
def _fwd(wx, rt, thr, c0, y0, y_out, c_out, u_out, r_out, z_out):
    T, B, H3 = wx.shape
    H = H3 // 3
    one = wx.dtype.type(1.0)
    two = wx.dtype.type(2.0)
    zero = wx.dtype.type(0.0)
    for b in numba.prange(B):
        act = np.empty(H, np.int64)
        acc = np.empty(H3, wx.dtype)
        na = _events(y0[b], act, zero)
        for t in range(T):
            yp = y0[b] if t == 0 else y_out[t - 1, b]
            cp = c0[b] if t == 0 else c_out[t - 1, b]
            for i in range(H3):
                acc[i] = zero
            # u, r: the columns (rows of RT) of the units that fired at t-1
            for k in range(na):
                j = act[k]
                yj = yp[j]
                for i in range(2 * H):
                    acc[i] += rt[j, i] * yj
            for i in range(H):
                r_out[t, b, i] = _sigmoid(wx[t, b, H + i] + acc[H + i], one)
            for k in range(na):
                j = act[k]
                ryj = r_out[t, b, j] * yp[j]
                for i in range(H):
                    acc[2 * H + i] += rt[j, 2 * H + i] * ryj
            na = 0
            for i in range(H):
                u = _sigmoid(wx[t, b, i] + acc[i], one)
                # tanh(a) = 2 sigmoid(2a) - 1 (libm tanhf is ~4x slower than expf here)
                z = two / (one + math.exp(-two * (wx[t, b, 2 * H + i] + acc[2 * H + i]))) - one
                c = u * z + (one - u) * cp[i] - yp[i]
                u_out[t, b, i] = u
                z_out[t, b, i] = z
                c_out[t, b, i] = c
                if c - thr[i] > zero:
                    y_out[t, b, i] = c
                    act[na] = i
                    na += 1
                else:
                    y_out[t, b, i] = zero


# exp(-a) for float32 in vectorisable form: a clamped to [-87, 88]; k = round(a / ln 2);
# r = a - k ln 2 with ln 2 split in two (Cody & Waite 1980: 0.693359375 is exact in 9 bits);
# e^r by its degree-7 Taylor polynomial (|r| <= ln2/2: truncation < 1e-8 relative); 2^k built in
# the float's exponent bits. Max relative error ~1.5 ulp (tests compare with the reference).
_LOG2E = 1.4426950408889634
_LN2_HI = 0.693359375
_LN2_LO = -2.1219444005469058e-4


@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy", inline="always")
def _sigmoid_rows(pre, n, out, tmp, kbits):
    """out[i] = 1 / (1 + exp(-pre[i])) for i < n (float32, vectorised)."""
    one = np.float32(1.0)
    kf = kbits.view(np.float32)
    c2, c3, c4 = np.float32(1 / 2), np.float32(1 / 6), np.float32(1 / 24)
    c5, c6, c7 = np.float32(1 / 120), np.float32(1 / 720), np.float32(1 / 5040)
    for i in range(n):
        a = np.minimum(np.maximum(-pre[i], np.float32(-87.0)), np.float32(88.0))
        ki = np.int32(a * np.float32(_LOG2E) + np.float32(128.5))
        k = np.float32(ki) - np.float32(128.0)
        r = a - k * np.float32(_LN2_HI)
        r = r - k * np.float32(_LN2_LO)
        tmp[i] = one + r * (one + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * c7))))))
        kbits[i] = (ki - np.int32(1)) * np.int32(1 << 23)
    for i in range(n):
        out[i] = one / (one + tmp[i] * kf[i])


@numba.njit(parallel=True, cache=True, fastmath=_FM, error_model="numpy")
def _fwd32(wx, rt, thr, c0, y0, y_out, c_out, u_out, r_out, z_out):
    T, B, H3 = wx.shape
    H = H3 // 3
    one = np.float32(1.0)
    two = np.float32(2.0)
    zero = np.float32(0.0)
    for b in numba.prange(B):
        act = np.empty(H, np.int64)
        acc = np.empty(H3, np.float32)
        pre = np.empty(H3, np.float32)
        sg = np.empty(H3, np.float32)
        tmp = np.empty(H3, np.float32)
        kb = np.empty(H3, np.int32)
        na = _events(y0[b], act, zero)
        for t in range(T):
            yp = y0[b] if t == 0 else y_out[t - 1, b]
            cp = c0[b] if t == 0 else c_out[t - 1, b]
            for i in range(H3):
                acc[i] = zero
            k = 0
            while k + 1 < na:  # two events per pass: one load/store of acc per two rows
                j1 = act[k]
                j2 = act[k + 1]
                y1 = yp[j1]
                y2 = yp[j2]
                for i in range(2 * H):
                    acc[i] += rt[j1, i] * y1 + rt[j2, i] * y2
                k += 2
            if k < na:
                j = act[k]
                yj = yp[j]
                for i in range(2 * H):
                    acc[i] += rt[j, i] * yj
            for i in range(H):
                pre[i] = wx[t, b, H + i] + acc[H + i]
            _sigmoid_rows(pre, H, r_out[t, b], tmp, kb)
            rr = r_out[t, b]
            k = 0
            while k + 1 < na:
                j1 = act[k]
                j2 = act[k + 1]
                ry1 = rr[j1] * yp[j1]
                ry2 = rr[j2] * yp[j2]
                for i in range(H):
                    acc[2 * H + i] += rt[j1, 2 * H + i] * ry1 + rt[j2, 2 * H + i] * ry2
                k += 2
            if k < na:
                j = act[k]
                ryj = rr[j] * yp[j]
                for i in range(H):
                    acc[2 * H + i] += rt[j, 2 * H + i] * ryj
            # u = sigmoid(a_u); tanh(a_z) = 2 sigmoid(2 a_z) - 1
            for i in range(H):
                pre[i] = wx[t, b, i] + acc[i]
                pre[H + i] = two * (wx[t, b, 2 * H + i] + acc[2 * H + i])
            _sigmoid_rows(pre, 2 * H, sg, tmp, kb)
            uo = u_out[t, b]
            zo = z_out[t, b]
            co = c_out[t, b]
            yo = y_out[t, b]
            for i in range(H):
                u = sg[i]
                z = two * sg[H + i] - one
                c = u * z + (one - u) * cp[i] - yp[i]
                uo[i] = u
                zo[i] = z
                co[i] = c
                yo[i] = c if c - thr[i] > zero else zero
            na = _events(yo, act, zero)


_BWD: dict = {}


def _bwd_for(sid: int):
    """The backward kernel for surrogate ``sid``, a compile-time constant (a closure, as in
    :func:`spiking.kernels.cpu.lif_backward._plain_kernel_for`): the surrogate's branch is
    folded away so the elementwise loops vectorise; only surrogates in use get compiled."""
    if sid in _BWD:
        return _BWD[sid]

    @numba.njit(parallel=True, cache=True, fastmath=_FM, error_model="numpy")
    def _bwd(gy_out, gc_out, rt, rw, thr, c0, y0, c_st, y_st, u_st, r_st, z_st, k1, k2, damp,
             dwx, drt_parts, dthr_parts, dc0, dy0):
        T, B, H = gy_out.shape
        one = gy_out.dtype.type(1.0)
        zero = gy_out.dtype.type(0.0)
        nchunk = drt_parts.shape[0]
        for ch in numba.prange(nchunk):
            b0 = ch * B // nchunk
            nb = (ch + 1) * B // nchunk - b0
            drt = drt_parts[ch]
            dthr = dthr_parts[ch]
            dt = gy_out.dtype
            dc = np.zeros((nb, H), dt)
            dcur = np.empty((nb, H), dt)
            grec = np.zeros((nb, H), dt)
            dau = np.empty((nb, H), dt)
            daz = np.empty((nb, H), dt)
            dar = np.empty((nb, H), dt)
            q = np.empty((nb, H), dt)
            gr = np.empty((nb, H), dt)
            s1v = np.empty((nb, H), dt)
            lst = np.empty(nb, np.int64)
            TB = 4
            # the events of the current block of TB steps, listed per unit j: step, sample,
            # y[t-1, j] and r[t, j] y[t-1, j] (at most TB * nb per unit)
            lt = np.empty((H, TB * nb), np.int32)
            lb = np.empty((H, TB * nb), np.int32)
            lu = np.empty((H, TB * nb), dt)
            lz = np.empty((H, TB * nb), dt)
            cnt = np.zeros(H, np.int64)
            ins = np.empty((H, nb), np.uint8)  # 1 if unit j of sample bb is in S[t-1]
            act = np.empty((nb, H), np.int64)
            na = np.empty(nb, np.int64)
            for t in range(T - 1, -1, -1):
                yp = y0[b0:b0 + nb] if t == 0 else y_st[t - 1, b0:b0 + nb]
                cp = c0[b0:b0 + nb] if t == 0 else c_st[t - 1, b0:b0 + nb]
                for bb in range(nb):
                    b = b0 + bb
                    for i in range(H):
                        c = c_st[t, b, i]
                        d = c - thr[i]
                        hp = damp * surrogate_grad(d, sid, k1, k2, one, zero)
                        e = one if d > zero else zero
                        g = gy_out[t, b, i] + grec[bb, i]
                        dci = dc[bb, i] + gc_out[t, b, i] + g * (e + c * hp)
                        dthr[i] -= g * c * hp
                        u = u_st[t, b, i]
                        z = z_st[t, b, i]
                        dau[bb, i] = dci * (z - cp[bb, i]) * u * (one - u)
                        daz[bb, i] = dci * u * (one - z * z)
                        dar[bb, i] = zero
                        dcur[bb, i] = dci
                        dc[bb, i] = dci * (one - u)
                    # events at t-1 and the backward support S[t-1] (every unit at t = 0)
                    na[bb] = _events(yp[bb], act[bb], zero)
                    for a in range(na[bb]):
                        j = act[bb, a]
                        m = cnt[j]
                        yj = yp[bb, j]
                        lt[j, m] = t
                        lb[j, m] = b
                        lu[j, m] = yj
                        lz[j, m] = r_st[t, b, j] * yj
                        cnt[j] = m + 1
                    if t == 0:
                        for j in range(H):
                            ins[j, bb] = 1
                    else:
                        for j in range(H):
                            d = cp[bb, j] - thr[j]
                            gs = surrogate_grad(d, sid, k1, k2, one, zero)
                            ins[j, bb] = 1 if (d > zero or gs != zero) else 0
                # dL/dy[t-1] on the support only (sparse BPTT): for each row k of RT, the
                # samples with k in S[t-1], four at a time (eight independent dot products per
                # pass: the loads of RT[k] are shared and the FMA chains do not wait on each
                # other). s2 = (R_z^T da_z)_k is also q_k for the events (events lie in S).
                for k in range(H):
                    n = 0
                    for bb in range(nb):  # branch-free: about half of the samples are in
                        lst[n] = bb       # (off S, s1v and q are never read)
                        n += ins[k, bb]
                    m = 0
                    while m + 4 <= n:
                        p1 = lst[m]
                        p2 = lst[m + 1]
                        p3 = lst[m + 2]
                        p4 = lst[m + 3]
                        a1 = zero
                        a2 = zero
                        a3 = zero
                        a4 = zero
                        e1 = zero
                        e2 = zero
                        e3 = zero
                        e4 = zero
                        for i in range(H):
                            ru = rt[k, i]
                            rz = rt[k, 2 * H + i]
                            a1 += ru * dau[p1, i]
                            a2 += ru * dau[p2, i]
                            a3 += ru * dau[p3, i]
                            a4 += ru * dau[p4, i]
                            e1 += rz * daz[p1, i]
                            e2 += rz * daz[p2, i]
                            e3 += rz * daz[p3, i]
                            e4 += rz * daz[p4, i]
                        s1v[p1, k] = a1
                        s1v[p2, k] = a2
                        s1v[p3, k] = a3
                        s1v[p4, k] = a4
                        q[p1, k] = e1
                        q[p2, k] = e2
                        q[p3, k] = e3
                        q[p4, k] = e4
                        m += 4
                    if m + 2 <= n:  # a pair: four independent chains instead of two
                        p1 = lst[m]
                        p2 = lst[m + 1]
                        a1 = zero
                        a2 = zero
                        e1 = zero
                        e2 = zero
                        for i in range(H):
                            ru = rt[k, i]
                            rz = rt[k, 2 * H + i]
                            a1 += ru * dau[p1, i]
                            a2 += ru * dau[p2, i]
                            e1 += rz * daz[p1, i]
                            e2 += rz * daz[p2, i]
                        s1v[p1, k] = a1
                        s1v[p2, k] = a2
                        q[p1, k] = e1
                        q[p2, k] = e2
                        m += 2
                    while m < n:
                        p1 = lst[m]
                        a1 = zero
                        e1 = zero
                        for i in range(H):
                            a1 += rt[k, i] * dau[p1, i]
                            e1 += rt[k, 2 * H + i] * daz[p1, i]
                        s1v[p1, k] = a1
                        q[p1, k] = e1
                        m += 1
                # the reset-gate adjoint, on events only
                for bb in range(nb):
                    for a in range(na[bb]):
                        j = act[bb, a]
                        r = r_st[t, b0 + bb, j]
                        dar[bb, j] = q[bb, j] * yp[bb, j] * r * (one - r)
                # gr = R_r^T da_r, non-zero da_r on events only: axpy over rows j of R_r (rw = R)
                for bb in range(nb):
                    for k in range(H):
                        gr[bb, k] = zero
                    a = 0
                    while a + 2 <= na[bb]:  # two events per pass: one load/store of gr per two
                        j1 = act[bb, a]
                        j2 = act[bb, a + 1]
                        d1 = dar[bb, j1]
                        d2 = dar[bb, j2]
                        for k in range(H):
                            gr[bb, k] += rw[H + j1, k] * d1 + rw[H + j2, k] * d2
                        a += 2
                    if a < na[bb]:
                        j = act[bb, a]
                        d = dar[bb, j]
                        for k in range(H):
                            gr[bb, k] += rw[H + j, k] * d
                for bb in range(nb):
                    for k in range(H):
                        if ins[k, bb]:
                            grec[bb, k] = (s1v[bb, k] + r_st[t, b0 + bb, k] * q[bb, k]
                                           + gr[bb, k] - dcur[bb, k])
                        else:
                            grec[bb, k] = zero
                for bb in range(nb):
                    b = b0 + bb
                    for i in range(H):
                        dwx[t, b, i] = dau[bb, i]
                        dwx[t, b, H + i] = dar[bb, i]
                        dwx[t, b, 2 * H + i] = daz[bb, i]
                # dR of the block of TB steps that starts here, while its rows of dwx are
                # still in cache: dR^T[j] += y[t-1, j] (da_u, da_r, r_j da_z)[t] over the
                # block's events of unit j, four per pass (one load/store of the row per four
                # events); da_r is zero off the events
                if t % TB == 0:
                    for j in range(H):
                        n = cnt[j]
                        cnt[j] = 0
                        dr = drt[j]
                        m = 0
                        while m + 4 <= n:
                            x1 = dwx[lt[j, m], lb[j, m]]
                            x2 = dwx[lt[j, m + 1], lb[j, m + 1]]
                            x3 = dwx[lt[j, m + 2], lb[j, m + 2]]
                            x4 = dwx[lt[j, m + 3], lb[j, m + 3]]
                            u1 = lu[j, m]
                            u2 = lu[j, m + 1]
                            u3 = lu[j, m + 2]
                            u4 = lu[j, m + 3]
                            for i in range(2 * H):
                                dr[i] += x1[i] * u1 + x2[i] * u2 + x3[i] * u3 + x4[i] * u4
                            z1 = lz[j, m]
                            z2 = lz[j, m + 1]
                            z3 = lz[j, m + 2]
                            z4 = lz[j, m + 3]
                            for i in range(H):
                                k = 2 * H + i
                                dr[k] += x1[k] * z1 + x2[k] * z2 + x3[k] * z3 + x4[k] * z4
                            m += 4
                        while m < n:
                            x1 = dwx[lt[j, m], lb[j, m]]
                            u1 = lu[j, m]
                            z1 = lz[j, m]
                            for i in range(2 * H):
                                dr[i] += x1[i] * u1
                            for i in range(H):
                                dr[2 * H + i] += x1[2 * H + i] * z1
                            m += 1
            for bb in range(nb):
                for i in range(H):
                    dc0[b0 + bb, i] = dc[bb, i]
                    dy0[b0 + bb, i] = grec[bb, i]

    _BWD[sid] = _bwd
    return _bwd


def _chunks(b: int) -> int:
    return max(1, min(b, numba.get_num_threads()))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class _EGRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, wx, weight_hh, thr, c0, y0, sid, k1, k2, damp):
        t, b, h3 = wx.shape
        h = h3 // 3
        dt = wx.dtype
        rt = weight_hh.detach().to(dt).t().contiguous()
        full = {"dtype": dt}
        y_out = torch.full((t, b, h), float("nan"), **full)  # NaN-filled: the kernel writes all
        c_out = torch.full((t, b, h), float("nan"), **full)
        u_out, r_out, z_out = (torch.empty((t, b, h), **full) for _ in range(3))
        thr_c = thr.detach().to(dt).contiguous()
        c0c, y0c = c0.detach().to(dt).contiguous(), y0.detach().to(dt).contiguous()
        fwd = _fwd32 if dt == torch.float32 else _fwd  # vectorised float32 elementwise
        fwd(_np(wx), rt.numpy(), thr_c.numpy(), c0c.numpy(), y0c.numpy(), y_out.numpy(),
             c_out.numpy(), u_out.numpy(), r_out.numpy(), z_out.numpy())
        CALLS["fwd"] += 1
        ctx.save_for_backward(rt, weight_hh, thr_c, c0c, y0c, c_out, y_out, u_out, r_out, z_out)
        ctx.cfg = (sid, k1, k2, damp, weight_hh.dtype, thr.dtype)
        return y_out, c_out

    @staticmethod
    def backward(ctx, gy, gc):
        rt, weight_hh, thr, c0, y0, c_st, y_st, u_st, r_st, z_st = ctx.saved_tensors
        sid, k1, k2, damp, w_dtype, thr_dtype = ctx.cfg
        dt = c_st.dtype
        gy = torch.zeros_like(y_st) if gy is None else gy.to(dt).contiguous()
        gc = torch.zeros_like(c_st) if gc is None else gc.to(dt).contiguous()
        t, b, h = y_st.shape
        nchunk = _chunks(b)
        dwx = torch.empty((t, b, 3 * h), dtype=dt)
        drt = torch.zeros((nchunk, h, 3 * h), dtype=dt)
        dthr = torch.zeros((nchunk, h), dtype=dt)
        dc0, dy0 = torch.empty((b, h), dtype=dt), torch.empty((b, h), dtype=dt)
        cast = np.dtype(str(dt).replace("torch.", "")).type
        rw = weight_hh.detach().to(dt).contiguous()  # R [3H, H] (no copy when it is already)
        _bwd_for(sid)(gy.numpy(), gc.numpy(), rt.numpy(), rw.numpy(), thr.numpy(), c0.numpy(),
                      y0.numpy(), c_st.numpy(), y_st.numpy(), u_st.numpy(), r_st.numpy(),
                      z_st.numpy(), cast(k1), cast(k2), cast(damp), dwx.numpy(), drt.numpy(),
                      dthr.numpy(), dc0.numpy(), dy0.numpy())
        CALLS["bwd"] += 1
        dw = (drt[0] if nchunk == 1 else drt.sum(0)).t().to(w_dtype)
        return dwx, dw, dthr.sum(0).to(thr_dtype), dc0, dy0, None, None, None, None


def run(wx, state, p, record=False):
    """Fused CPU run; same signature and returns as :func:`spiking.kernels.egru.reference`."""
    if wx.shape[0] == 0:
        from spiking.kernels.egru import reference
        return reference(wx, state, p, record)
    sid = int(p.surrogate.kernel_id)
    k1, k2 = surrogate_consts(sid, float(p.surrogate.alpha))
    y, c = _EGRUFunction.apply(wx, p.weight_hh, p.threshold, state.c, state.y, sid, k1, k2,
                               float(p.dampening))
    final = EGRUState(c[-1], y[-1])
    return (y, final, EGRUState(c, y)) if record else (y, final)
