r"""Fused CPU (numba) LSM reservoir: event-driven recurrence, whole time loop in one kernel.

The update is the one of :mod:`spiking.kernels.lsm` (its docstring is the spec). Per sample
(``numba.prange`` over the batch), per step: the spikes of the previous step are kept as a list;
for each of them the fan-out row ``indices[indptr[j]:indptr[j+1]]`` of the CSR matrix is added
into ``rec`` (cost = spikes x fan-out), then the elementwise LIF update with refractoriness
builds the next list. Postsynaptic indices are read as uint16 (up to 65,536 neurons) or
uint32: unsigned, so the scatter loop carries no negative-index handling, and narrow, so a
synapse costs 6 (8) bytes of memory traffic with its float32 weight. The elementwise update
is branch-free (selects), so it vectorises, and every per-neuron parameter is expanded to
``[N]`` beforehand (no ``n % size`` in the loop). No gradient: the reservoir is fixed.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from spiking.kernels.lsm import LSMState

CALLS = {"fwd": 0}  # sentinel for tests


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _fwd(x, indptr, indices, weights, am, asyn, thr, nref, v_reset, v0, i0, r0, s0,
         s_out, v_out, v_fin, i_fin, r_fin, record):
    T, B, N = x.shape
    zero = x.dtype.type(0.0)
    one = x.dtype.type(1.0)
    for b in numba.prange(B):
        act = np.empty(N, np.int32)
        rec = np.zeros(N, x.dtype)
        v = v0[b].copy()
        cur = i0[b].copy()
        ref = r0[b].astype(np.int32)
        na = 0
        for j in range(N):
            if s0[b, j] != zero:
                act[na] = j
                na += 1
        for t in range(T):
            for k in range(na):
                j = act[k]
                # unsigned indices over row slices: no negative-index wraparound code in the
                # hot loop (numba adds it for signed indices), which halves its instructions
                cols = indices[indptr[j]:indptr[j + 1]]
                w = weights[indptr[j]:indptr[j + 1]]
                for e in range(cols.shape[0]):
                    rec[cols[e]] += w[e]
            xt = x[t, b]
            st = s_out[t, b]
            # elementwise LIF update without branches (vectorises), then the spike list
            for n in range(N):
                c = asyn[n] * cur[n] + xt[n] + rec[n]
                rec[n] = zero
                cur[n] = c
                r = ref[n]
                vv = am[n] * v[n] + c
                fire = (r == 0) & (vv - thr[n] > zero)
                v[n] = v_reset if (fire | (r != 0)) else vv
                ref[n] = nref[n] if fire else np.maximum(r - 1, 0)
                st[n] = one if fire else zero
            if record:
                v_out[t, b] = v
            na = 0
            for n in range(N):
                if st[n] != zero:
                    act[na] = n
                    na += 1
        v_fin[b] = v
        i_fin[b] = cur
        r_fin[b] = ref


def _flat(t: torch.Tensor, n: int, dtype) -> np.ndarray:
    """A parameter (scalar or [N]) as a contiguous ``[n]`` array (scalars broadcast)."""
    a = t.detach().to(dtype).reshape(-1)
    if a.numel() not in (1, n):
        raise ValueError(f"reservoir parameter must be a scalar or [N]=[{n}], got {a.numel()}")
    return a.expand(n).contiguous().numpy()


def _indices(indices: torch.Tensor, n: int) -> np.ndarray:
    """Postsynaptic indices, unsigned and as narrow as ``n`` allows (uint16 up to 65,536
    neurons: 6 instead of 8 bytes per synapse with the float32 weight; the scatter streams
    the fan-out rows from memory, so fewer bytes are less time)."""
    a = indices.to(torch.int32).contiguous().numpy()
    return a.astype(np.uint16) if n <= 1 << 16 else a.view(np.uint32)


def run(x, state, p, record=False):
    """Fused CPU run; same signature and returns as :func:`spiking.kernels.lsm.reference`."""
    t, b, n = x.shape
    dt = x.dtype
    x = x.detach().contiguous()
    s_out = torch.full((t, b, n), float("nan"), dtype=dt)
    v_out = torch.full((t, b, n) if record else (1, 1, 1), float("nan"), dtype=dt)
    v_fin, i_fin = torch.empty(b, n, dtype=dt), torch.empty(b, n, dtype=dt)
    r_fin = torch.empty(b, n, dtype=torch.int64)
    nref = p.n_ref.detach().to(torch.int32).expand(n).contiguous()
    _fwd(x.numpy(), p.indptr.to(torch.int64).contiguous().numpy(),
         _indices(p.indices, n), _flat(p.weights, p.weights.numel(), dt),
         _flat(p.alpha_mem, n, dt), _flat(p.alpha_syn, n, dt), _flat(p.threshold, n, dt),
         nref.numpy(), np.dtype(str(dt).replace("torch.", "")).type(p.v_reset),
         state.v.detach().to(dt).contiguous().numpy(), state.i.detach().to(dt).contiguous().numpy(),
         state.ref.to(torch.int64).contiguous().numpy(),
         state.s.detach().to(dt).contiguous().numpy(), s_out.numpy(), v_out.numpy(),
         v_fin.numpy(), i_fin.numpy(), r_fin.numpy(), bool(record))
    CALLS["fwd"] += 1
    s_last = s_out[-1] if t else state.s
    final = LSMState(v_fin, i_fin, r_fin, s_last.clone())
    return (s_out, final, v_out) if record else (s_out, final)
