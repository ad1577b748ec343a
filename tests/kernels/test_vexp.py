"""The vectorisable exp of the numba kernels (spiking.kernels.cpu.vexp) against exact values."""

import numpy as np
import pytest

vexp = pytest.importorskip("spiking.kernels.cpu.vexp")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exp_within_an_ulp_or_so_and_ieee_at_the_ends(dtype):
    g = np.random.default_rng(1)
    fi = np.finfo(dtype)
    # the whole range where e^x is a normal number, ends included
    lo, hi = (-708.39, 709.78) if dtype == np.float64 else (-87.3365, 88.7228)
    x = np.concatenate([g.standard_normal(50_000) * 5, g.uniform(lo, hi, 50_000),
                        [0.0, -0.0, 1e-30, lo, hi, 0.5 * np.log(2), -0.5 * np.log(2)]])
    x = x.astype(dtype)
    out = np.empty_like(x)
    bits = np.empty(x.shape, dtype=np.int64 if dtype == np.float64 else np.int32)
    f = vexp.exp_into64 if dtype == np.float64 else vexp.exp_into32
    f(x, out, bits, bits.view(dtype))
    exact = np.exp(x.astype(np.longdouble))
    rel = np.abs(out - exact) / exact
    assert rel.max() <= 1.5 * fi.eps, (rel.max() / fi.eps, x[rel.argmax()])
    ends = np.array([np.nan, np.inf, -np.inf, hi + 1, lo - 1, 1e30, -1e30], dtype=dtype)
    res = np.empty_like(ends)
    f(ends, res, bits[:7], bits[:7].view(dtype))
    assert np.isnan(res[0])
    assert np.isinf(res[1]) and res[1] > 0 and res[2] == 0
    assert np.isinf(res[3]) and res[4] == 0 and np.isinf(res[5]) and res[6] == 0
