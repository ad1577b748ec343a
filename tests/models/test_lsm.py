"""LSM: reservoir properties, fused vs reference, ridge vs numpy, learning a real task."""

import numpy as np
import pytest
import torch

from spiking.kernels import dispatch
from spiking.kernels import lsm as K
from spiking.models.lsm import LSM, ridge, spectral_radius_of

CPU_OK = dispatch.backend_status()["cpu"] is None


def _dense(m):
    return K.dense_weights(m.params(), dtype=torch.float64)


def test_dales_law_and_no_autapses():
    m = LSM(10, 2, 300, seed=3)
    w = _dense(m)
    exc = m.exc
    assert (w[exc] >= 0).all() and (w[~exc] <= 0).all()
    assert (w[exc] > 0).any() and (w[~exc] < 0).any()
    assert (torch.diagonal(w) == 0).all()
    assert int(exc.sum()) == 240  # frac_exc 0.8


def test_connection_probability_within_tolerance():
    n, p = 400, 0.1
    m = LSM(10, 2, n, p_connect=p, seed=1)
    pairs = n * (n - 1)
    nnz = int(m.indices.numel())
    sd = (pairs * p * (1 - p)) ** 0.5
    assert abs(nnz - pairs * p) < 4 * sd, (nnz, pairs * p)


def test_distance_connectivity_prefers_neighbours():
    m = LSM(10, 2, 216, connectivity="distance", seed=2)
    from spiking.models.lsm import grid_positions

    pos = grid_positions(216)
    w = _dense(m)
    d = torch.cdist(pos, pos)
    near, far = (d > 0) & (d <= 1.5), d >= 4
    assert (w[near] != 0).double().mean() > 5 * (w[far] != 0).double().mean()


@pytest.mark.parametrize("rho", [0.5, 1.3])
def test_spectral_radius_as_requested(rho):
    m = LSM(10, 2, 200, spectral_radius=rho, seed=4)
    ev = np.linalg.eigvals(_dense(m).numpy())
    assert abs(np.abs(ev).max() - rho) < 1e-5 * rho
    # the sparse (ARPACK) path agrees with the dense one on a larger matrix
    big = LSM(10, 2, 700, seed=5)
    est = spectral_radius_of(big.indptr, big.indices, big.weights.double(), 700)
    ref = np.abs(np.linalg.eigvals(_dense(big).numpy())).max()
    assert abs(est - ref) < 1e-6 * ref


def test_weight_sampler_hook():
    calls = {}

    def sampler(pre, post, gen):
        calls["n"] = pre.numel()
        return torch.full((pre.numel(),), 2.0, dtype=torch.float64)

    m = LSM(10, 2, 100, weight_sampler=sampler, weight_scale=1.0, g_inh=3.0, seed=0)
    assert calls["n"] == m.indices.numel()
    vals = set(m.weights.unique().tolist())
    assert vals <= {2.0, -6.0}
    with pytest.raises(ValueError, match="weight_sampler"):
        LSM(10, 2, 50, weight_sampler=lambda p, q, g: -torch.ones(p.numel()))


def _inputs(m, t=30, b=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(t, b, m.n_in, generator=g) < 0.3).to(dtype)
    return (x @ m.w_in.to(dtype)) * 0.8


def _fused_vs_reference(backend, calls, n, t, b, dtype, device="cpu"):
    """One fused run against the reference from a state with spikes and refractory counts set;
    ``calls`` is the backend's sentinel dict, which must count exactly one forward."""
    m = LSM(12, 2, n, seed=n, dt=1e-3)
    m.n_ref[:] = torch.randint(0, 4, (n,))
    cur = _inputs(m, t, b, dtype)
    st0 = K.initial_state(cur[0], m.params())
    st0 = st0._replace(s=(torch.rand(b, n) < 0.3).to(dtype), ref=torch.randint(0, 2, (b, n)))
    m, cur = m.to(device), cur.to(device)
    st0 = K.LSMState(*(v.to(device) for v in st0))
    before = calls["fwd"]
    ref = K.run(cur, st0, m.params(), backend="reference", record=True)
    out = K.run(cur, st0, m.params(), backend=backend, record=True)
    assert calls["fwd"] == before + 1
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert torch.equal(out[0], ref[0])  # spikes identical
    torch.testing.assert_close(out[2], ref[2], rtol=tol, atol=tol)
    for a, c in zip(ref[1], out[1]):
        torch.testing.assert_close(c.to(a.dtype), a, rtol=tol, atol=tol)
    return ref


@pytest.mark.skipif(not CPU_OK, reason="numba is not available")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,t,b", [(1 + 1, 1, 1), (97, 25, 3), (300, 40, 2)])
def test_cpu_fused_matches_reference(n, t, b, dtype):
    from spiking.kernels.cpu import lsm as C

    ref = _fused_vs_reference("cpu", C.CALLS, n, t, b, dtype)
    if n > 2:
        assert 0 < float(ref[0].mean()) < 1  # both spiking and silent steps are covered


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,t,b", [(1 + 1, 1, 1), (97, 25, 3), (300, 30, 4)])
def test_cuda_fused_matches_reference(n, t, b, dtype, cuda_device):
    """On a GPU and under the CPU emulator of the .cu kernel (fixture cuda_device)."""
    from spiking.kernels import cuda_lsm

    _fused_vs_reference("cuda", cuda_lsm.CALLS, n, t, b, dtype, cuda_device)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_source_compiles_with_nvrtc(arch):
    nv = pytest.importorskip("spiking.kernels.nvrtc")
    if nv.find_libnvrtc() is None:
        pytest.skip("libnvrtc not found")
    r = nv.compile_source(nv.CUDA_DIR / "lsm.cu", arch)
    assert r.ok, r.log


def test_refractory_golden():
    # one neuron, constant drive above threshold, n_ref = 2: spikes at t = 0, 3, 6
    m = LSM(1, 2, 2, p_connect=0.0, seed=0)
    p = m.params()._replace(alpha_mem=torch.tensor(0.0), alpha_syn=torch.tensor(0.0),
                            n_ref=torch.tensor([2, 2]))
    x = torch.full((8, 1, 2), 1.5, dtype=torch.float64)
    s, st = K.reference(x, K.initial_state(x[0], p), p)
    assert s[:, 0, 0].tolist() == [1, 0, 0, 1, 0, 0, 1, 0]
    assert st.ref[0, 0].item() == 1


@pytest.mark.parametrize("lam", [0.0, 0.5, 7.0])
@pytest.mark.parametrize("s,d", [(40, 12), (15, 30)])
def test_ridge_matches_numpy_least_squares(lam, s, d):
    g = np.random.default_rng(0)
    f, y = g.normal(size=(s, d)), g.normal(size=(s, 3))
    w, b = ridge(torch.tensor(f), torch.tensor(y), lam)
    # numpy: augmented least squares [F 1; sqrt(lam) I 0] [W; b] = [Y; 0]
    a = np.block([[f, np.ones((s, 1))], [np.sqrt(lam) * np.eye(d), np.zeros((d, 1))]])
    rhs = np.vstack([y, np.zeros((d, 3))])
    sol = np.linalg.lstsq(a, rhs, rcond=None)[0]
    if lam == 0 and d > s:  # underdetermined: compare predictions (both interpolate)
        np.testing.assert_allclose(f @ w.numpy() + b.numpy(), y, atol=1e-8)
        return
    np.testing.assert_allclose(w.numpy(), sol[:d], atol=1e-8)
    np.testing.assert_allclose(b.numpy(), sol[d], atol=1e-8)


def test_scale_to_rate_and_op_counts():
    m = LSM(20, 2, 150, seed=0)
    x = (torch.rand(20, 4, 20) < 0.2).float()
    rate = m.scale_to_rate(x, 0.08)
    assert abs(rate - 0.08) < 0.03
    s = m.reservoir(x)
    c = m.op_counts(20, 4, s)
    fan = (m.indptr[1:] - m.indptr[:-1]).double()
    assert c["synops_event"] == int((s.double().sum((0, 1)) * fan).sum())
    assert c["recurrent_macs_dense"] == 20 * 4 * 150 * 150
    assert c["synops_event"] < c["synops_dense"]
    assert c["recurrent_acs_event"] == c["synops_event"]


def test_ridge_readout_learns_nmnist_digits(shared_data):
    from tests.models.test_egru_model import nmnist_two_digits

    xtr, ytr, xte, yte = nmnist_two_digits(shared_data)
    m = LSM((2, 8, 8), 2, 300, n_windows=2, seed=0, dt=10e-3, tau_mem=30e-3)
    m.scale_to_rate(xtr[:, :20], 0.1)
    m.fit_ridge(xtr, ytr, lam=10.0)
    logits, act = m(xte)
    assert float((logits.argmax(1) == yte).float().mean()) >= 0.8  # chance 0.5
    assert 0 < float(act["reservoir"].mean()) < 0.5


@pytest.mark.skipif(not CPU_OK, reason="numba is not available")
def test_cpu_index_width_follows_reservoir_size(monkeypatch):
    """uint16 postsynaptic indices up to 65,536 neurons, uint32 beyond; both give the same run."""
    import numpy as np

    from spiking.kernels.cpu import lsm as C

    idx = torch.tensor([0, 5, 65535])
    assert C._indices(idx, 1 << 16).dtype == np.uint16
    assert C._indices(idx, (1 << 16) + 1).dtype == np.uint32
    assert C._indices(idx, 1 << 16).tolist() == [0, 5, 65535]
    m = LSM(12, 2, 150, seed=4, dt=1e-3)
    cur = _inputs(m, 30, 2, torch.float32)
    narrow = K.run(cur, None, m.params(), backend="cpu", record=True)
    monkeypatch.setattr(C, "_indices", lambda i, n: i.to(torch.int32).numpy().view(np.uint32))
    wide = K.run(cur, None, m.params(), backend="cpu", record=True)
    assert 0 < float(narrow[0].mean()) < 1
    assert torch.equal(narrow[0], wide[0]) and torch.equal(narrow[2], wide[2])
