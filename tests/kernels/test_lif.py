"""Golden hand-computed traces for the LIF-family update (spiking/kernels/lif.py).

Decays of exactly 0.5 come from discretization="euler" with dt = 1 ms and tau = 2 ms
(1 - 0.001/0.002 = 0.5 exactly in binary floating point), so every value below is exact
arithmetic that can be checked by hand.
"""

import pytest
import torch

import spiking

HALF = dict(dt=1e-3, discretization="euler", backend="reference")


def run(neuron, xs):
    x = torch.tensor(xs, dtype=torch.float64).reshape(-1, 1, 1)
    s, state, traj = neuron.double()(x, record=True)
    return s.flatten().tolist(), traj


@pytest.mark.parametrize("reset, spikes, v", [
    ("subtract", [0, 0, 1, 0, 1], [0.6, 0.9, 0.05, 0.025, 0.5125]),
    ("zero", [0, 0, 1, 0, 1], [0.6, 0.9, 0.0, 0.0, 0.0]),
    ("none", [0, 0, 1, 0, 1], [0.6, 0.9, 1.05, 0.525, 1.7625]),
])
def test_lif_golden(reset, spikes, v):
    s, traj = run(spiking.LIF(tau_mem=2e-3, reset=reset, **HALF), [0.6, 0.6, 0.6, 0.0, 1.5])
    assert s == spikes
    torch.testing.assert_close(traj.v.flatten(), torch.tensor(v, dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_lif_reset_delay_golden():
    # snnTorch convention: the reset of a spike at t is subtracted at t+1, after the leak.
    s, traj = run(spiking.LIF(tau_mem=2e-3, reset_delay=True, **HALF), [0.6, 0.6, 0.6, 0.0, 1.5])
    assert s == [0, 0, 1, 0, 1]
    torch.testing.assert_close(traj.v.flatten(),
                               torch.tensor([0.6, 0.9, 1.05, -0.475, 1.2625], dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_lif_threshold_is_strict():
    s, _ = run(spiking.LIF(tau_mem=2e-3, **HALF), [1.0, 0.0])
    assert s == [0, 0]


def test_lif_v_leak_and_reset_value():
    # v relaxes towards v_leak = 0.2 ; zero reset goes to v_reset = -0.5
    n = spiking.LIF(tau_mem=2e-3, reset="zero", v_leak=0.2, v_reset=-0.5, **HALF)
    s, traj = run(n, [0.0, 1.0, 0.0])
    # t1: h = 0.5*0.2 + 0.5*0.2 + 0 = 0.2 ; t2: 0.1+0.1+1 = 1.2 -> spike, v=-0.5 ;
    # t3: -0.25 + 0.1 = -0.15
    assert s == [0, 1, 0]
    torch.testing.assert_close(traj.v.flatten(),
                               torch.tensor([0.2, -0.5, -0.15], dtype=torch.float64),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("current_first, spikes, v", [
    (True, [0, 0, 0, 1], [1.0, 1.0, 0.75, 0.3]),
    (False, [0, 0, 0, 0], [0.0, 1.0, 1.0, 0.75]),
])
def test_cubalif_golden(current_first, spikes, v):
    n = spiking.CubaLIF(tau_mem=2e-3, tau_syn=2e-3, current_first=current_first, **HALF)
    s, traj = run(n, [1.0, 0.0, 0.0, 0.8])
    assert s == spikes
    torch.testing.assert_close(traj.v.flatten(), torch.tensor(v, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(traj.i.flatten(),
                               torch.tensor([1.0, 0.5, 0.25, 0.925], dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_alif_golden():
    n = spiking.ALIF(tau_mem=2e-3, tau_adapt=2e-3, adapt_jump=0.5, **HALF)
    s, traj = run(n, [1.2, 1.2, 1.2])
    assert s == [1, 1, 0]
    torch.testing.assert_close(traj.a.flatten(),
                               torch.tensor([0.5, 0.75, 0.375], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(traj.v.flatten(),
                               torch.tensor([0.2, 0.05, 1.225], dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_li_golden():
    x = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64).reshape(-1, 1, 1)
    out, _ = spiking.LI(tau_mem=2e-3, **HALF).double()(x)
    assert out.flatten().tolist() == [1.0, 1.5, 0.75]
    out, _ = spiking.LI(tau_mem=2e-3, normalize_input=True, **HALF).double()(x)
    assert out.flatten().tolist() == [0.5, 0.75, 0.375]


def test_exp_discretization_decay():
    # exp(-dt/tau): after one step with no input v decays by exactly that factor
    n = spiking.LIF(tau_mem=20e-3, dt=1e-3, reset="none", backend="reference").double()
    s, st = n(torch.zeros(1, 1, 1, dtype=torch.float64), spiking.LIFState(
        torch.ones(1, 1, dtype=torch.float64)))
    assert st.v.item() == pytest.approx(torch.exp(torch.tensor(-0.05, dtype=torch.float64)).item(),
                                        abs=1e-15)


def test_step_equals_sequence():
    n = spiking.CubaLIF(tau_mem=8e-3, tau_syn=3e-3, backend="reference")
    x = torch.rand(30, 4, 7) * 0.9
    s_seq, st_seq = n(x)
    st, outs = None, []
    cell = n.cell()
    for t in range(30):
        s_t, st = cell(x[t], st)
        outs.append(s_t)
    assert torch.equal(torch.stack(outs), s_seq)
    torch.testing.assert_close(st.v, st_seq.v)


def test_batch_first_matches_time_first():
    n = spiking.ALIF(backend="reference")
    x = torch.rand(25, 3, 5) * 2
    s_tf, st_tf = n(x)
    n.batch_first = True
    s_bf, st_bf = n(x.transpose(0, 1))
    assert torch.equal(s_bf.transpose(0, 1), s_tf)
    torch.testing.assert_close(st_bf.v, st_tf.v)


def test_learnable_tau_and_threshold_get_gradients():
    n = spiking.LIF(learn_tau=True, learn_threshold=True, n_neurons=6, backend="reference")
    x = torch.rand(40, 2, 6) * 1.5
    s, st = n(x)
    (s.sum() + st.v.sum()).backward()
    assert n.log_tau_mem.grad is not None and n.log_tau_mem.grad.abs().sum() > 0
    assert n.threshold.grad is not None and n.threshold.grad.abs().sum() > 0
    assert n.tau_mem.shape == (6,)


def test_state_is_carried_between_calls():
    n = spiking.CubaLIF(backend="reference")
    x = torch.rand(20, 2, 3)
    s_all, st_all = n(x)
    s1, st1 = n(x[:8])
    s2, st2 = n(x[8:], st1)
    assert torch.equal(torch.cat([s1, s2]), s_all)
    torch.testing.assert_close(st2.v, st_all.v)
    torch.testing.assert_close(st2.i, st_all.i)
