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

import math

import numpy as np
import torch

from spiking.kernels import wkv as K

_JIT: dict = {}


def _kernels():
    if _JIT:
        return _JIT["fwd"], _JIT["bwd"]
    import numba

    @numba.njit(parallel=True, fastmath=False, cache=False)
    def fwd(w, u, k, v, a0, b0, p0, y, sa, sb, sp, af, bf, pf):
        n_t, n_bc = k.shape
        n_c = w.shape[0]
        for j in numba.prange(n_bc):
            c = j % n_c
            wc, uc = np.float64(w[c]), np.float64(u[c])
            a, b, p = np.float64(a0[j]), np.float64(b0[j]), np.float64(p0[j])
            for t in range(n_t):
                sa[t, j] = a
                sb[t, j] = b
                sp[t, j] = p
                kt, vt = np.float64(k[t, j]), np.float64(v[t, j])
                ww = uc + kt
                q = max(p, ww)
                e1 = math.exp(p - q)
                e2 = math.exp(ww - q)
                y[t, j] = (e1 * a + e2 * vt) / (e1 * b + e2)
                ww = p - wc
                q = max(ww, kt)
                e1 = math.exp(ww - q)
                e2 = math.exp(kt - q)
                a = e1 * a + e2 * vt
                b = e1 * b + e2
                p = q
            af[j], bf[j], pf[j] = a, b, p

    @numba.njit(parallel=True, fastmath=False, cache=False)
    def bwd(w, u, k, v, y, sa, sb, sp, gy, gk, gv, gw, gu):
        n_t, n_bc = k.shape
        n_c = w.shape[0]
        for j in numba.prange(n_bc):
            c = j % n_c
            wc, uc = np.float64(w[c]), np.float64(u[c])
            al, be, q = 0.0, 0.0, -1e38
            dw, du = 0.0, 0.0
            for t in range(n_t - 1, -1, -1):
                kt, vt, yt = np.float64(k[t, j]), np.float64(v[t, j]), np.float64(y[t, j])
                p, sat, sbt = np.float64(sp[t, j]), np.float64(sa[t, j]), np.float64(sb[t, j])
                ww = uc + kt
                big = max(p, ww)
                e1 = math.exp(p - big)
                e2 = math.exp(ww - big)
                r = gy[t, j] / (e1 * sbt + e2)
                ek = math.exp(kt + q)
                gv[t, j] = r * e2 + ek * al
                gk[t, j] = r * e2 * (vt - yt) + ek * (vt * al + be)
                du += r * e2 * (vt - yt)
                dw -= math.exp(p + q - wc) * (sat * al + sbt * be)
                qn = max(q - wc, -big)
                f1 = math.exp(q - wc - qn)
                f2 = math.exp(-big - qn)
                al = f1 * al + f2 * r
                be = f1 * be - f2 * r * yt
                q = qn
            gw[j] = dw
            gu[j] = du

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
