"""exp over a float array as plain arithmetic that LLVM vectorises, for the numba kernels.

numba's ``math.exp`` is one scalar libm call per element; where a kernel's inner loop is a
run of exponentials (the LTC's N^2 synapse sigmoids per unfold, the WKV's rescales of a block
of columns) that call is most of the time. Here: x = k ln2 + r with |r| <= ln2/2 and ln2 split
in two so that k ln2 is exact (Cody and Waite 1980, "Software Manual for the Elementary
Functions"), e^r by a polynomial, 2^k written straight into the exponent bits (IEEE 754:
binary64 bias 1023 and 52 mantissa bits, binary32 bias 127 and 23).

- float64 (:func:`exp_into64`): Taylor series to r^13 (truncation < 5e-18 relative).
- float32 (:func:`exp_into32`): the degree-7 polynomial and the ln2 split of Cephes' expf
  (S. Moshier, Cephes Math Library, expf.c), in float32 throughout.

Both are within about one unit in the last place of the exact value (tests/kernels/test_vexp.py
measures them against long double), give +inf above the largest finite result, 0 below the
smallest normal one (no subnormal results) and NaN for NaN. ``bits`` is integer scratch of the
length of ``x`` and ``scale`` its float view, both made once by the caller (a view per call
costs an allocation): ``bits = np.empty(n, np.int64); scale = bits.view(np.float64)``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_LOG2E = 1.4426950408889634
# ln 2 split as fdlibm's e_exp.c splits it (Sun Microsystems): the last 21 bits of _LN2_HI's
# mantissa are zero, so k * _LN2_HI is exact for |k| < 2^21 (here |k| <= 1024);
# _LN2_LO = ln 2 - _LN2_HI. float32: _LN2_HI_F = 0.693359375 has 9 significant bits.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_TAYLOR = tuple(1.0 / math.factorial(n) for n in range(13, -1, -1))  # 1/13!, ..., 1/1!, 1
# e^x is a normal float64 for x in [_LO, _HI] (ln of the smallest normal is -708.3964, of the
# largest finite 709.7827); at the top k = 1024 is applied as 2 * 2^1023.
_LO, _HI = -708.39, 709.78
_F = np.float32
_LOG2E_F, _HALF_F, _ONE_F, _ZERO_F = _F(1.4426950408889634), _F(0.5), _F(1.0), _F(0.0)
_LN2_HI_F, _LN2_LO_F = _F(0.693359375), _F(-2.12194440e-4)
_EXPF_P = tuple(_F(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_LO_F, _HI_F = _F(-87.33654), _F(88.72283)  # as _LO, _HI: ln 2^-126 = -87.33655, ln max 88.72284
_INF_F = _F(np.inf)


@numba.njit(cache=True, inline="always")
def _horner(r, coeffs):
    """coeffs[0] r^(n-1) + ... + coeffs[n-1] (highest degree first)."""
    p = coeffs[0]
    for c in coeffs[1:]:
        p = p * r + c
    return p


@numba.njit(cache=True, fastmath={"contract"})
def exp_into64(x, out, bits, scale):
    """out[m] = exp(x[m]) for float64 arrays (``bits`` int64, ``scale`` its float64 view)."""
    n = x.shape[0]
    for m in range(n):
        v = x[m]
        c = _LO if v < _LO else (_HI if v > _HI else v)
        k = math.floor(c * _LOG2E + 0.5)
        r = (c - k * _LN2_HI) - k * _LN2_LO
        kk = k if k < 1024 else 1023  # 2^1024 has no float64: 2 * 2^1023
        out[m] = _horner(r, _TAYLOR) * (1.0 + (k - kk))
        bits[m] = (np.int64(kk) + 1023) << 52
    for m in range(n):
        v = x[m]
        e = out[m] * scale[m]
        out[m] = 0.0 if v < _LO else (np.inf if v > _HI else (e if v == v else v))


@numba.njit(cache=True, fastmath={"contract"})
def exp_into32(x, out, bits, scale):
    """The float32 twin of :func:`exp_into64` (``bits`` int32, ``scale`` its float32 view)."""
    n = x.shape[0]
    for m in range(n):
        v = x[m]
        c = _LO_F if v < _LO_F else (_HI_F if v > _HI_F else v)
        k = np.floor(c * _LOG2E_F + _HALF_F)
        r = (c - k * _LN2_HI_F) - k * _LN2_LO_F
        kk = k if k < _F(128.0) else _F(127.0)  # 2^128 has no float32: 2 * 2^127
        out[m] = (_horner(r, _EXPF_P) * (r * r) + r + _ONE_F) * (_ONE_F + (k - kk))
        bits[m] = (np.int32(kk) + np.int32(127)) << np.int32(23)
    for m in range(n):
        v = x[m]
        e = out[m] * scale[m]
        out[m] = _ZERO_F if v < _LO_F else (_INF_F if v > _HI_F else (e if v == v else v))
