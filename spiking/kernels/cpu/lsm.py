r"""Fused CPU (numba) LSM reservoir: event-driven recurrence, whole time loop in one kernel.

The update is the one of :mod:`spiking.kernels.lsm` (its docstring is the spec). Per sample
(``numba.prange`` over the batch), per step: the spikes of the previous step are kept as a list;
for each of them the fan-out row ``indices[indptr[j]:indptr[j+1]]`` of the CSR matrix is added
into ``rec`` (cost = spikes x fan-out), then the elementwise LIF update with refractoriness
builds the next list. Postsynaptic indices are read as int32 (less memory traffic per
synapse: 8 bytes with a float32 weight). No gradient: the reservoir is fixed.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from spiking.kernels.lsm import LSMState

CALLS = {"fwd": 0}  # sentinel for tests


@numba.njit(parallel=True, cache=True)
def _fwd(x, indptr, indices, weights, am, asyn, thr, nref, v_reset, v0, i0, r0, s0,
         s_out, v_out, v_fin, i_fin, r_fin, record):
    T, B, N = x.shape
    zero = x.dtype.type(0.0)
    one = x.dtype.type(1.0)
    pa, ps, pt = am.size, asyn.size, thr.size
    for b in numba.prange(B):
        act = np.empty(N, np.int64)
        rec = np.zeros(N, x.dtype)
        v = v0[b].copy()
        cur = i0[b].copy()
        ref = r0[b].copy()
        na = 0
        for j in range(N):
            if s0[b, j] != zero:
                act[na] = j
                na += 1
        for t in range(T):
            for k in range(na):
                j = act[k]
                for e in range(indptr[j], indptr[j + 1]):
                    rec[indices[e]] += weights[e]
            na = 0
            for n in range(N):
                c = asyn[n % ps] * cur[n] + x[t, b, n] + rec[n]
                rec[n] = zero
                cur[n] = c
                if ref[n] == 0:
                    vv = am[n % pa] * v[n] + c
                    if vv - thr[n % pt] > zero:
                        s_out[t, b, n] = one
                        v[n] = v_reset
                        ref[n] = nref[n]
                        act[na] = n
                        na += 1
                    else:
                        s_out[t, b, n] = zero
                        v[n] = vv
                else:
                    v[n] = v_reset
                    ref[n] -= 1
                    s_out[t, b, n] = zero
                if record:
                    v_out[t, b, n] = v[n]
        v_fin[b] = v
        i_fin[b] = cur
        r_fin[b] = ref


def _flat(t: torch.Tensor, n: int, dtype) -> np.ndarray:
    """A parameter (scalar or [N]) as a 1-D array read as ``p[n % size]``."""
    a = t.detach().to(dtype).reshape(-1).contiguous()
    if a.numel() not in (1, n):
        raise ValueError(f"reservoir parameter must be a scalar or [N]=[{n}], got {a.numel()}")
    return a.numpy()


def run(x, state, p, record=False):
    """Fused CPU run; same signature and returns as :func:`spiking.kernels.lsm.reference`."""
    t, b, n = x.shape
    dt = x.dtype
    x = x.detach().contiguous()
    s_out = torch.full((t, b, n), float("nan"), dtype=dt)
    v_out = torch.full((t, b, n) if record else (1, 1, 1), float("nan"), dtype=dt)
    v_fin, i_fin = torch.empty(b, n, dtype=dt), torch.empty(b, n, dtype=dt)
    r_fin = torch.empty(b, n, dtype=torch.int64)
    nref = p.n_ref.detach().to(torch.int64).expand(n).contiguous()
    _fwd(x.numpy(), p.indptr.to(torch.int64).contiguous().numpy(),
         p.indices.to(torch.int32).contiguous().numpy(), _flat(p.weights, p.weights.numel(), dt),
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
