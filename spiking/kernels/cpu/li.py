r"""Fused CPU (numba) kernels of the leaky integrator LI (spec: :mod:`spiking.kernels.li`).

Forward per neuron, same operation order as the reference (bitwise equal results):
``i = alpha_syn * i + x[t]`` (with a synapse), ``v = alpha_mem * v + (1 - alpha_mem) * v_leak
+ gain * drive``, ``out[t] = v``. Backward in reverse with adjoints ``gv, gi``:

.. code-block:: text

    gv += grad_out[t];  gi += grad_i_traj[t]
    g_alpha_mem += gv * (v[t-1] - v_leak);  g_v_leak += gv * (1 - alpha_mem)
    g_gain += gv * drive;  gdrive = gain * gv;  gv <- alpha_mem * gv
    with a synapse: gx = gi + gdrive;  g_alpha_syn += gx * i[t-1];  gi <- alpha_syn * gx
    without:        gx = gdrive

Memory kept for backward per neuron-step: nothing beyond the output ``v`` itself when the input
is float32/float64 (the output is saved), plus ``i`` with a synapse (4 B in float32). The input
``x`` is kept only when the gain needs a gradient and there is no synapse.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from spiking.kernels import fused
from spiking.kernels.cpu.lif import BLOCK, _add_row, _block_state, _np, _scalars

CALLS = {"fwd": 0, "bwd": 0}  # sentinel for tests: incremented by every fused run


@numba.njit(cache=True, error_model="numpy")
def _block_params(j0, n, am, asy, g, vl, one):
    """alpha_mem, alpha_syn, gain, (1 - alpha_mem) * v_leak, v_leak of neurons j0 .. j0+n-1."""
    q = np.empty((5, n), am.dtype)
    for jj in range(n):
        j = j0 + jj
        q[0, jj] = am[j % am.shape[0]]
        q[1, jj] = asy[j % asy.shape[0]]
        q[2, jj] = g[j % g.shape[0]]
        q[4, jj] = vl[j % vl.shape[0]]
        q[3, jj] = (one - q[0, jj]) * q[4, jj]
    return q


# Blocked like the LIF kernels (spiking/kernels/cpu/lif.py): prange over blocks of BLOCK
# neurons, time loop, then the block's neurons in a vectorised innermost loop.
@numba.njit(parallel=True, cache=True, error_model="numpy")
def _fwd(x, v0, i0, am, asy, g, vl, syn, record, out, vT, iT, i_st, i_tr, one):
    T, M = x.shape
    for b in numba.prange((M + BLOCK - 1) // BLOCK):
        j0 = b * BLOCK
        n = min(BLOCK, M - j0)
        q = _block_params(j0, n, am, asy, g, vl, one)
        p_am, p_as, p_g, c_leak = q[0], q[1], q[2], q[3]
        vb = _block_state(v0, True, j0, n, one)
        ib = _block_state(i0, syn, j0, n, one)
        for t in range(T):
            xr = x[t, j0:j0 + n]
            orow = out[t, j0:j0 + n]
            if syn:
                ir = i_st[t, j0:j0 + n]
                for jj in range(n):
                    i = p_as[jj] * ib[jj] + xr[jj]
                    ib[jj] = i
                    ir[jj] = i
                    v = p_am[jj] * vb[jj] + c_leak[jj] + p_g[jj] * i
                    vb[jj] = v
                    orow[jj] = v
                if record:
                    itr = i_tr[t, j0:j0 + n]
                    for jj in range(n):
                        itr[jj] = ib[jj]
            else:
                for jj in range(n):
                    v = p_am[jj] * vb[jj] + c_leak[jj] + p_g[jj] * xr[jj]
                    vb[jj] = v
                    orow[jj] = v
        for jj in range(n):
            vT[j0 + jj] = vb[jj]
            if syn:
                iT[j0 + jj] = ib[jj]


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _bwd(g_out, g_vT, g_iT, g_itr, has_g, v0, i0, v_st, i_st, x, has_x, am, asy, g, vl, syn,
         gx, gv0, gi0, gp, one, zero):
    T, M = v_st.shape
    for b in numba.prange((M + BLOCK - 1) // BLOCK):
        j0 = b * BLOCK
        n = min(BLOCK, M - j0)
        q = _block_params(j0, n, am, asy, g, vl, one)
        p_am, p_as, p_g, p_vl = q[0], q[1], q[2], q[4]
        zb = np.zeros(n, v_st.dtype)
        v0b = _block_state(v0, True, j0, n, zero)
        i0b = _block_state(i0, syn, j0, n, zero)
        gvb = _block_state(g_vT, has_g[1], j0, n, zero)
        gib = _block_state(g_iT, has_g[2], j0, n, zero)
        d_am, d_as, d_g, d_vl = zb.copy(), zb.copy(), zb.copy(), zb.copy()
        for t in range(T - 1, -1, -1):
            if has_g[0]:
                _add_row(gvb, g_out, t, j0, n)
            if syn and has_g[3]:
                _add_row(gib, g_itr, t, j0, n)
            v_p = v_st[t - 1, j0:j0 + n] if t > 0 else v0b
            i_p = (i_st[t - 1, j0:j0 + n] if t > 0 else i0b) if syn else zb
            drv = i_st[t, j0:j0 + n] if syn else (x[t, j0:j0 + n] if has_x else zb)
            gxr = gx[t, j0:j0 + n]
            for jj in range(n):
                gv = gvb[jj]
                d_am[jj] += gv * (v_p[jj] - p_vl[jj])
                d_vl[jj] += gv * (one - p_am[jj])
                d_g[jj] += gv * drv[jj]
                gdrive = p_g[jj] * gv
                gvb[jj] = p_am[jj] * gv
                gtot = gib[jj] + gdrive
                d_as[jj] += gtot * i_p[jj] if syn else zero
                gib[jj] = p_as[jj] * gtot if syn else zero
                gxr[jj] = gtot if syn else gdrive
        for jj in range(n):
            gv0[j0 + jj] = gvb[jj]
            if syn:
                gi0[j0 + jj] = gib[jj]
            gp[0, j0 + jj] = d_am[jj]
            gp[1, j0 + jj] = d_as[jj]
            gp[2, j0 + jj] = d_g[jj]
            gp[3, j0 + jj] = d_vl[jj]


def forward_kernel(x, v0, i0, params, cfg, record):
    CALLS["fwd"] += 1
    syn = bool(cfg[0])
    T, M = x.shape
    dt = torch.empty(0, dtype=x.dtype).numpy().dtype
    out, vT = fused.alloc(x.shape, x.dtype, "cpu"), fused.alloc(v0.shape, v0.dtype, "cpu")

    def opt(flag, shape):
        return fused.alloc(shape if flag else (0,), x.dtype, "cpu")
    iT, i_st, i_tr = opt(syn, (M,)), opt(syn, (T, M)), opt(record and syn, (T, M))
    _fwd(_np(x, dt, 2), _np(v0, dt, 1), _np(i0, dt, 1), *[_np(q, dt, 1) for q in params], syn,
         bool(record), out.numpy(), vT.numpy(), _np(iT, dt, 1), _np(i_st, dt, 2),
         _np(i_tr, dt, 2), dt.type(1))
    # CPU kernels compute in the input dtype, so the output itself is the saved membrane.
    return out, vT, iT, opt(False, ()), i_st, i_tr


def backward_kernel(g_out, g_vT, g_iT, g_itr, v0, i0, v_st, i_st, x, params, cfg):
    CALLS["bwd"] += 1
    T, M = v_st.shape
    syn = bool(cfg[0])
    dt = torch.empty(0, dtype=v_st.dtype).numpy().dtype
    has_g = np.array([gr is not None and gr.numel() > 0 for gr in (g_out, g_vT, g_iT, g_itr)],
                     dtype=np.bool_)
    gx, gv0 = fused.alloc((T, M), v_st.dtype, "cpu"), fused.alloc((M,), v_st.dtype, "cpu")
    gi0 = fused.alloc((M if syn else 0,), v_st.dtype, "cpu")
    gp = fused.alloc((len(fused.LI_PARAMS), M), v_st.dtype, "cpu")
    one, zero = _scalars(dt)
    _bwd(_np(g_out, dt, 2), _np(g_vT, dt, 1), _np(g_iT, dt, 1), _np(g_itr, dt, 2), has_g,
         _np(v0, dt, 1), _np(i0, dt, 1), _np(v_st, dt, 2), _np(i_st, dt, 2), _np(x, dt, 2),
         x is not None, *[_np(q, dt, 1) for q in params], syn, gx.numpy(), gv0.numpy(),
         _np(gi0, dt, 1), gp.numpy(), one, zero)
    return gx, gv0, gi0, gp


fused.register_kernel("li_fwd", "cpu", forward_kernel)
fused.register_kernel("li_bwd", "cpu", backward_kernel)


def run(x, state, p, record=False):
    """Fused CPU run; same signature and returns as :func:`spiking.kernels.li.reference`."""
    return fused.run_li(x, state, p, record, backend="cpu")
