r"""Fused WKV on CPU (numba): forward and a hand-written backward, one loop per (batch, channel).

The forward is the update of :mod:`spiking.kernels.wkv` (running-max form); it also stores the
state ``(a, b, p)`` *before* each step (``sa, sb, sp`` ``[T, B, C]``) for the backward.

Backward (derivation). In exact arithmetic the state holds ``A = a e^p``, ``B = b e^p`` with
``A[t] = e^{-w} A[t-1] + e^{k[t]} v[t]``, ``B[t] = e^{-w} B[t-1] + e^{k[t]}`` and
``wkv[t] = N[t] / D[t]``, ``N[t] = A[t-1] + e^{u+k[t]} v[t]``, ``D[t] = B[t-1] + e^{u+k[t]}``.
With ``g[t] = dL/dwkv[t]``:

.. code-block:: text

    direct:   dv[t] += g e^{u+k}/D ;   dk[t] += g e^{u+k} (v - wkv)/D ;   du += same as dk
    carried:  alpha[t] = dL/dA[t] = e^{-w} alpha[t+1] + g[t+1]/D[t+1]     (alpha[T-1] = 0)
              beta[t]  = dL/dB[t] = e^{-w} beta[t+1]  - g[t+1] wkv[t+1]/D[t+1]
              dk[t] += e^{k[t]} (v[t] alpha[t] + beta[t]) ;   dv[t] += e^{k[t]} alpha[t]
              dw    -= e^{-w} (A[t-1] alpha[t] + B[t-1] beta[t])

``alpha, beta`` are kept scaled by a running exponent ``q`` (``alpha = al e^q``), the max of
the exponents ``-P[s] - (s-1-t) w`` of their terms, where ``P[s] = max(p[s-1], u + k[s])`` is the
forward's output-stage shift (``D[s] = d e^{P[s]}``, ``d >= 1``). Because ``P[s]`` bounds
``k[i] - (s-1-i) w`` for every ``i < s``, the exponents used below satisfy
``k[t] + q <= 0`` and ``p[t-1] + q - w <= 0``: no ``exp`` overflows. Per channel:

.. code-block:: text

    al = be = 0, q = -1e38
    for t = T-1 .. 0:
        P = max(p[t-1], u + k[t]);  e1 = exp(p[t-1] - P);  e2 = exp(u + k[t] - P)
        d = e1 b[t-1] + e2;   r = g[t] / d                     (g/D = r e^{-P})
        dv[t] = r e2 + exp(k[t] + q) al
        dk[t] = r e2 (v[t] - wkv[t]) + exp(k[t] + q) (v[t] al + be);   du += r e2 (v[t] - wkv[t])
        dw   -= exp(p[t-1] + q - w) (a[t-1] al + b[t-1] be)
        q' = max(q - w, -P);  f1 = exp(q - w - q');  f2 = exp(-P - q')
        al = f1 al + f2 r;   be = f1 be - f2 r wkv[t];   q = q'

``dw`` and ``du`` are accumulated per (batch, channel) and summed over the batch in torch.
Loops over ``T`` allocate nothing, so there is no sequence-length limit. Arithmetic inside
the kernels is float64 for float32 tensors too (inputs and outputs keep their dtype): in float32
the exponent ``p`` (up to |k|, e.g. 300) would lose the small per-step decay ``w`` to rounding
and drift over long sequences.
"""

from __future__ import annotations


import numpy as np
import torch

from spiking.kernels import wkv as K

_JIT: dict = {}
_BLOCK = 64     # (batch, channel) columns per thread task: 64 float64 states fit in L1


def _kernels():
    if _JIT:
        return _JIT["fwd"], _JIT["bwd"]
    import numba

    from spiking.kernels.cpu.vexp import exp_into64

    # Each thread owns a block of _BLOCK adjacent (batch, channel) columns and walks T with
    # the block as the inner loop: every step reads and writes contiguous memory. Of the two
    # exponentials of a running-max rescale, one is exp(0) = 1: one exp(-|d|) and a select.
    # A step first gathers the exponents of the whole block, then takes them in one
    # vectorised pass (spiking.kernels.cpu.vexp), then finishes the block's update.

    @numba.njit(parallel=True, fastmath=False, cache=False)
    def fwd(w, u, k, v, a0, b0, p0, y, sa, sb, sp, af, bf, pf):
        n_t, n_bc = k.shape
        n_c = w.shape[0]
        for blk in numba.prange((n_bc + _BLOCK - 1) // _BLOCK):
            j0 = blk * _BLOCK
            m = min(n_bc, j0 + _BLOCK) - j0
            sa_, sb_, sp_ = np.empty(m), np.empty(m), np.empty(m)
            ws, us = np.empty(m), np.empty(m)
            z, e = np.empty(2 * m), np.empty(2 * m)   # exp arguments / values of one step
            bits = np.empty(2 * m, dtype=np.int64)
            scale = bits.view(np.float64)
            for i in range(m):
                j = j0 + i
                sa_[i], sb_[i], sp_[i] = a0[j], b0[j], p0[j]
                ws[i], us[i] = w[j % n_c], u[j % n_c]
            for t in range(n_t):
                for i in range(m):
                    kt = np.float64(k[t, j0 + i])
                    z[i] = -abs(sp_[i] - (us[i] + kt))        # output stage: max(p, u + k)
                    z[m + i] = -abs(sp_[i] - ws[i] - kt)      # state update: max(p - w, k)
                exp_into64(z, e, bits, scale)
                for i in range(m):
                    j = j0 + i
                    a, b, p = sa_[i], sb_[i], sp_[i]
                    sa[t, j] = a
                    sb[t, j] = b
                    sp[t, j] = p
                    kt, vt = np.float64(k[t, j]), np.float64(v[t, j])
                    e1, e2 = e[i], e[m + i]
                    if p - (us[i] + kt) >= 0:
                        y[t, j] = (a + e1 * vt) / (b + e1)
                    else:
                        y[t, j] = (e1 * a + vt) / (e1 * b + 1.0)
                    if p - ws[i] - kt >= 0:
                        sa_[i], sb_[i], sp_[i] = a + e2 * vt, b + e2, p - ws[i]
                    else:
                        sa_[i], sb_[i], sp_[i] = e2 * a + vt, e2 * b + 1.0, kt
            for i in range(m):
                j = j0 + i
                af[j], bf[j], pf[j] = sa_[i], sb_[i], sp_[i]

    @numba.njit(parallel=True, fastmath=False, cache=False)
    def bwd(w, u, k, v, y, sa, sb, sp, gy, gk, gv, gw, gu):
        n_t, n_bc = k.shape
        n_c = w.shape[0]
        for blk in numba.prange((n_bc + _BLOCK - 1) // _BLOCK):
            j0 = blk * _BLOCK
            m = min(n_bc, j0 + _BLOCK) - j0
            als, bes, qs = np.zeros(m), np.zeros(m), np.full(m, -1e38)
            dws, dus = np.zeros(m), np.zeros(m)
            ws, us = np.empty(m), np.empty(m)
            z, e = np.empty(4 * m), np.empty(4 * m)   # the 4 exp of a step, block by block
            bits = np.empty(4 * m, dtype=np.int64)
            scale = bits.view(np.float64)
            for i in range(m):
                ws[i], us[i] = w[(j0 + i) % n_c], u[(j0 + i) % n_c]
            for t in range(n_t - 1, -1, -1):
                for i in range(m):
                    j = j0 + i
                    kt, p, q = np.float64(k[t, j]), np.float64(sp[t, j]), qs[i]
                    d = p - (us[i] + kt)                  # big = max(p, u + k)
                    big = p if d >= 0 else us[i] + kt
                    z[i] = -abs(d)
                    z[m + i] = kt + q
                    z[2 * m + i] = p + q - ws[i]
                    z[3 * m + i] = -abs(q - ws[i] + big)  # q' = max(q - w, -big)
                exp_into64(z, e, bits, scale)
                for i in range(m):
                    j = j0 + i
                    wc, al, be, q = ws[i], als[i], bes[i], qs[i]
                    kt, vt, yt = np.float64(k[t, j]), np.float64(v[t, j]), np.float64(y[t, j])
                    p, sat, sbt = np.float64(sp[t, j]), np.float64(sa[t, j]), np.float64(sb[t, j])
                    d = p - (us[i] + kt)
                    if d >= 0:
                        big, e1, e2 = p, 1.0, e[i]
                    else:
                        big, e1, e2 = us[i] + kt, e[i], 1.0
                    r = gy[t, j] / (e1 * sbt + e2)
                    ek = e[m + i]
                    gv[t, j] = r * e2 + ek * al
                    gk[t, j] = r * e2 * (vt - yt) + ek * (vt * al + be)
                    dus[i] += r * e2 * (vt - yt)
                    dws[i] -= e[2 * m + i] * (sat * al + sbt * be)
                    if q - wc + big >= 0:
                        f1, f2, qs[i] = 1.0, e[3 * m + i], q - wc
                    else:
                        f1, f2, qs[i] = e[3 * m + i], 1.0, -big
                    als[i] = f1 * al + f2 * r
                    bes[i] = f1 * be - f2 * r * yt
            for i in range(m):
                gw[j0 + i] = dws[i]
                gu[j0 + i] = dus[i]

    _JIT["fwd"], _JIT["bwd"] = fwd, bwd
    return fwd, bwd


def _np(x: torch.Tensor) -> np.ndarray:
    return x.numpy()


class _Impl:
    """Raw forward/backward on contiguous CPU tensors, used by :class:`wkv.FusedWKV`."""

    @staticmethod
    def forward(w, u, k, v, a0, b0, p0):
        fwd, _ = _kernels()
        t, b, c = k.shape
        k2, v2 = k.reshape(t, b * c), v.reshape(t, b * c)
        y = torch.empty_like(k2)
        sa, sb, sp = torch.empty_like(k2), torch.empty_like(k2), torch.empty_like(k2)
        af, bf, pf = (torch.empty(b * c, dtype=k.dtype) for _ in range(3))
        fwd(_np(w), _np(u), _np(k2), _np(v2), _np(a0.reshape(-1)), _np(b0.reshape(-1)),
            _np(p0.reshape(-1)), _np(y), _np(sa), _np(sb), _np(sp), _np(af), _np(bf), _np(pf))
        shape = (t, b, c)
        return (y.view(shape), sa.view(shape), sb.view(shape), sp.view(shape),
                (af.view(b, c), bf.view(b, c), pf.view(b, c)))

    @staticmethod
    def backward(w, u, k, v, y, sa, sb, sp, gy):
        _, bwd = _kernels()
        t, b, c = k.shape
        flat = [x.reshape(t, b * c) for x in (k, v, y, sa, sb, sp, gy)]
        gk, gv = torch.empty_like(flat[0]), torch.empty_like(flat[0])
        gw, gu = torch.empty(b * c, dtype=k.dtype), torch.empty(b * c, dtype=k.dtype)
        bwd(_np(w), _np(u), *[_np(x) for x in flat], _np(gk), _np(gv), _np(gw), _np(gu))
        return (gw.view(b, c).sum(0), gu.view(b, c).sum(0), gk.view(t, b, c), gv.view(t, b, c))


def run(w, u, k, v, state: K.WKVState):
    """Fused CPU WKV; same signature and results as :func:`spiking.kernels.wkv.reference`."""
    if k.device.type != "cpu":
        raise ValueError(f"cpu WKV needs CPU tensors, got {k.device}")
    dt = k.dtype
    w, u = w.to(dt), u.to(dt)
    state = K.WKVState(*(s.to(dt) for s in state))
    return K.fused_apply(_Impl, w, u, k, v, state)
