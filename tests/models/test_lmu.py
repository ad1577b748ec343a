"""LMU: golden A, B matrices, ZOH discretisation, parallel (FFT) vs recurrent equality, learning."""

import math

import pytest
import torch

from spiking.kernels import lmu as K
from spiking.models.lmu import LMU


def test_continuous_matrices_golden_order_3():
    # By hand from Voelker et al. 2019 eq. 2: A[i,j] = (2i+1) * (-1 if i<j else (-1)^(i-j+1)),
    # B[i] = (2i+1) (-1)^i.
    a, b = K.continuous_matrices(3)
    a_hand = torch.tensor([[-1.0, -1.0, -1.0],
                           [3.0, -3.0, -3.0],
                           [-5.0, 5.0, -5.0]], dtype=torch.float64)
    b_hand = torch.tensor([1.0, -3.0, 5.0], dtype=torch.float64)
    assert torch.equal(a, a_hand)
    assert torch.equal(b, b_hand)


def test_zoh_order_1_closed_form():
    # d = 1: theta m' = -m + u  ->  Abar = exp(-dt/theta), Bbar = 1 - exp(-dt/theta)
    abar, bbar = K.discretize(1, theta=4.0, dt=1.0)
    assert abar.item() == pytest.approx(math.exp(-0.25), abs=1e-14)
    assert bbar.item() == pytest.approx(1 - math.exp(-0.25), abs=1e-14)


def test_zoh_order_2_closed_form():
    # d = 2, theta = 1: A = [[-1,-1],[3,-3]], eigenvalues -2 +- i*sqrt(2).
    # expm(A t) = e^{-2t} [cos(wt) I + sin(wt)/w (A + 2 I)], w = sqrt(2).
    t, w = 0.3, math.sqrt(2.0)
    e, c, s = math.exp(-2 * t), math.cos(w * t), math.sin(w * t) / w
    a_hand = [[e * (c + s * 1.0), e * (s * -1.0)], [e * (s * 3.0), e * (c + s * -1.0)]]
    # Bbar = A^{-1} (Abar - I) B with A^{-1} = [[-3, 1], [-3, -1]] / 6, B = [1, -3]
    m = [[a_hand[0][0] - 1, a_hand[0][1]], [a_hand[1][0], a_hand[1][1] - 1]]
    mb = [m[0][0] * 1 + m[0][1] * -3, m[1][0] * 1 + m[1][1] * -3]
    b_hand = [(-3 * mb[0] + 1 * mb[1]) / 6, (-3 * mb[0] - 1 * mb[1]) / 6]
    abar, bbar = K.discretize(2, theta=1.0, dt=t)
    assert torch.allclose(abar, torch.tensor(a_hand, dtype=torch.float64), atol=1e-13)
    assert torch.allclose(bbar, torch.tensor(b_hand, dtype=torch.float64), atol=1e-13)


def test_zoh_matches_scipy_cont2discrete():
    signal = pytest.importorskip("scipy.signal")
    a, b = K.continuous_matrices(6)
    theta, dt = 20.0, 1.0
    ad, bd, *_ = signal.cont2discrete(((a / theta).numpy(), (b / theta).numpy()[:, None],
                                       torch.eye(6).numpy(), torch.zeros(6, 1).numpy()),
                                      dt=dt, method="zoh")
    abar, bbar = K.discretize(6, theta, dt)
    assert torch.allclose(abar, torch.from_numpy(ad), atol=1e-12)
    assert torch.allclose(bbar, torch.from_numpy(bd[:, 0]), atol=1e-12)


def test_validation():
    with pytest.raises(ValueError, match="order"):
        K.continuous_matrices(0)
    with pytest.raises(ValueError, match="theta"):
        K.discretize(4, theta=0.0)
    with pytest.raises(ValueError, match="hidden_feedback"):
        LMU(3, 4, 4, 10.0, hidden_feedback=True, mode="parallel")
    with pytest.raises(ValueError, match=r"\[T, B, N\]"):
        LMU(3, 4, 4, 10.0)(torch.zeros(5, 3))


@pytest.mark.parametrize("t", [1, 7, 64])
def test_memory_parallel_equals_recurrent(t):
    abar, bbar = K.discretize(8, theta=12.0)
    u = torch.randn(t, 3, 5, dtype=torch.float64, requires_grad=True)
    m0 = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    ref, fr = K.reference(u, K.LMUState(m0), abar, bbar)
    par, fp = K.parallel(u, K.LMUState(m0), abar, bbar)
    assert torch.allclose(par, ref, atol=1e-10)
    assert torch.allclose(fp.m, fr.m, atol=1e-10)
    w = torch.randn_like(ref)
    g_ref = torch.autograd.grad((ref * w).sum(), (u, m0))
    g_par = torch.autograd.grad((par * w).sum(), (u, m0))
    for a, b in zip(g_ref, g_par):
        assert torch.allclose(a, b, atol=1e-10)


def test_layer_parallel_equals_recurrent_outputs_and_gradients():
    torch.manual_seed(1)
    layer = LMU(4, 6, order=5, theta=9.0, n_memory=2).double()
    x = torch.randn(33, 2, 4, dtype=torch.float64)
    h_par, s_par = layer(x)
    g_par = torch.autograd.grad((h_par ** 2).sum(), list(layer.parameters()))
    layer.mode = "recurrent"
    h_rec, s_rec = layer(x)
    g_rec = torch.autograd.grad((h_rec ** 2).sum(), list(layer.parameters()))
    assert torch.allclose(h_par, h_rec, atol=1e-10)
    assert torch.allclose(s_par.m, s_rec.m, atol=1e-10)
    assert torch.allclose(s_par.h, s_rec.h, atol=1e-12)
    for a, b in zip(g_par, g_rec):
        assert torch.allclose(a, b, atol=1e-9)
    # streaming: two chunks with carried state == one pass
    layer.mode = "parallel"
    h1, st = layer(x[:20])
    h2, _ = layer(x[20:], st)
    assert torch.allclose(torch.cat([h1, h2]), h_par, atol=1e-10)


def test_memory_reconstructs_delayed_input():
    # The memory holds the window on shifted Legendre polynomials: u(t - r*theta) ~=
    # sum_i P~_i(r) m_i (Voelker et al. 2019, eq. 3), with P~_i(1) = 1 (delay theta) and
    # P~_i(0) = (-1)^i (no delay). Order 12 truncates the window: error bound 0.05 for a
    # sine of period 4*theta.
    order, theta = 12, 40.0
    abar, bbar = K.discretize(order, theta)
    t = torch.arange(400, dtype=torch.float64)
    u = torch.sin(2 * math.pi * t / 160.0)[:, None, None]
    m, _ = K.parallel(u, None, abar, bbar)
    m = m[:, 0, 0]                                             # [T, d]
    far = m.sum(-1)
    near = (m * torch.tensor([(-1.0) ** i for i in range(order)], dtype=torch.float64)).sum(-1)
    assert (far[200:] - u[160:360, 0, 0]).abs().max() < 0.05
    assert (near[200:] - u[200:400, 0, 0]).abs().max() < 0.05


def test_hidden_feedback_runs_recurrently_and_learns_delay():
    torch.manual_seed(0)
    layer = LMU(1, 16, order=8, theta=10.0, hidden_feedback=True, mode="recurrent")
    head = torch.nn.Linear(16, 1)
    opt = torch.optim.Adam([*layer.parameters(), *head.parameters()], lr=1e-2)
    x = torch.randn(40, 16, 1)
    target = torch.zeros_like(x)
    target[5:] = x[:-5]                               # recall the input 5 steps back
    first = None
    for _ in range(60):
        h, _ = layer(x)
        loss = ((head(h) - target) ** 2)[10:].mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
