"""Learnable time constants: learnt as their log (always positive, relative steps), old
checkpoints (taus in seconds) load unchanged, and the optimiser does not decay them."""

import math
import warnings

import pytest
import torch

import spiking
from spiking.models import RSNN
from spiking.training.loop import param_groups

DT = 1e-3


def drive(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(60, 3, n, generator=g) * 1.6


@pytest.mark.parametrize("cls,names", [(spiking.LIF, ["tau_mem"]),
                                       (spiking.CubaLIF, ["tau_mem", "tau_syn"]),
                                       (spiking.ALIF, ["tau_mem", "tau_adapt"]),
                                       (spiking.LI, ["tau_mem"])])
def test_learnable_taus_are_log_parameters_read_in_seconds(cls, names):
    m = cls(learn_tau=True, n_neurons=5, dt=DT)
    params = dict(m.named_parameters())
    for name in names:
        assert name not in params and "log_" + name in params
        torch.testing.assert_close(getattr(m, name), params["log_" + name].exp())
        assert getattr(m, name).requires_grad
    fixed = cls(n_neurons=5, dt=DT)
    assert not list(fixed.parameters())                 # fixed taus stay exact buffers
    assert fixed.tau_mem.dtype == torch.float64


def test_adam_steps_change_a_learnt_tau_relatively_and_never_below_zero():
    """The bug this guards: a tau in seconds moved by ~lr per Adam step crossed zero within a
    few hundred steps (trained RSNNs held up to 59 of 128 non-positive membrane taus)."""
    m = spiking.ALIF(learn_tau=True, n_neurons=4, tau_mem=20e-3, tau_adapt=200e-3, dt=DT)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    for _ in range(300):                # a push of constant size towards shorter taus
        opt.zero_grad()
        (m.tau_mem.log().sum() + m.tau_adapt.log().sum()).backward()
        opt.step()
    # Adam with a constant-sign gradient steps by lr each time: log tau falls by 300 * 2e-3.
    # In seconds the same steps would have left 20e-3 - 0.6 < 0 (and 200e-3 - 0.6 < 0).
    shrink = math.exp(-300 * 2e-3)
    torch.testing.assert_close(m.tau_mem.detach(), torch.full((4,), 20e-3 * shrink),
                               rtol=1e-3, atol=0)
    torch.testing.assert_close(m.tau_adapt.detach(), torch.full((4,), 200e-3 * shrink),
                               rtol=1e-3, atol=0)
    s, _ = m(drive(4))
    assert torch.isfinite(s).all()


def _old_state(m, taus):
    """The state dict this module had before taus were learnt as logs: tau_* in seconds."""
    sd = {k: v for k, v in m.state_dict().items() if not k.startswith("log_")}
    sd.update(taus)
    return sd


def test_old_checkpoint_with_taus_in_seconds_loads_and_computes_as_before():
    torch.manual_seed(1)
    tau_mem = torch.tensor([20e-3, -5e-3, 0.0, 35e-3, 8e-3])     # two that training broke
    tau_adapt = torch.tensor([0.2, 0.15, -0.01, 0.4, 0.3])
    m = spiking.ALIF(learn_tau=True, n_neurons=5, dt=DT)
    with pytest.warns(UserWarning) as caught:
        m.load_state_dict(_old_state(m, {"tau_mem": tau_mem, "tau_adapt": tau_adapt}))
    said = sorted(str(w.message) for w in caught)
    assert len(said) == 2
    assert said[0].startswith("ALIF.tau_adapt: 1 of 5 time constants in the checkpoint are <= 0")
    assert said[1].startswith("ALIF.tau_mem: 2 of 5 time constants in the checkpoint are <= 0")
    # The old code clamped tau at 1e-12 s before the decay: a fixed model with those taus
    # is what the old checkpoint computed.
    ref = spiking.ALIF(tau_mem=tau_mem.clamp_min(1e-12).double(),
                       tau_adapt=tau_adapt.clamp_min(1e-12).double(), n_neurons=5, dt=DT)
    x = drive()
    (s, st), (s_ref, st_ref) = m(x), ref(x)
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(st.v, st_ref.v)
    assert "log_tau_mem" in dict(m.named_parameters())           # still learnable


def test_learnt_log_taus_load_into_a_fixed_tau_model():
    torch.manual_seed(2)
    m = spiking.CubaLIF(learn_tau=True, n_neurons=5, dt=DT)
    with torch.no_grad():
        m.log_tau_mem.add_(torch.randn(5) * 0.3)
        m.log_tau_syn.add_(torch.randn(5) * 0.3)
    fixed = spiking.CubaLIF(n_neurons=5, dt=DT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed.load_state_dict(m.state_dict())
    torch.testing.assert_close(fixed.tau_mem, m.tau_mem.detach().double())
    torch.testing.assert_close(fixed.tau_syn, m.tau_syn.detach().double())
    x = drive()
    assert torch.equal(fixed(x)[0], m(x)[0])


@pytest.mark.parametrize("value", [float("inf"), [0.02, float("inf")]])
def test_a_learnable_infinite_tau_is_refused_with_the_value(value):
    with pytest.raises(ValueError, match=r"learnable tau_mem must be finite.*inf"):
        spiking.LIF(tau_mem=value, learn_tau=True, n_neurons=None if isinstance(value, float)
                    else 2)
    assert spiking.LIF(tau_mem=float("inf")).tau_mem.isinf()        # fixed: allowed


def test_weight_decay_skips_learnt_time_constants():
    model = RSNN(10, 3, hidden=(8, 6))
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    kept = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert kept and all(n.rpartition(".")[2].startswith("log_tau") for n in kept)
    assert any(n.endswith("weight") for n in decayed)
    assert decayed | kept == set(names.values()) and not decayed & kept
    assert len(param_groups(RSNN(10, 3, hidden=(8,), learn_tau=False), 0.1)) == 1
