"""Time reductions of the linear readouts of the EGRU and LTC/CfC networks."""

import pytest
import torch

from spiking.models.egru import EGRU
from spiking.models.ltc import LTCNet
from spiking.models.readout import readout_macs, time_readout


def test_time_readout_by_hand():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    h = torch.randn(5, 2, 4)
    per_step = torch.stack([lin(h[t]) for t in range(5)])
    torch.testing.assert_close(time_readout(lin, h, "mean"), per_step.mean(0))
    torch.testing.assert_close(time_readout(lin, h, "max"), per_step.max(0).values)
    torch.testing.assert_close(time_readout(lin, h, "last"), per_step[-1])
    # padded steps (sample 1 has 2 valid steps) never reach the logits
    lengths = torch.tensor([5, 2])
    h_pad = h.clone()
    h_pad[2:, 1] = 1e6
    for reduce, want in (("mean", per_step[:2, 1].mean(0)), ("max", per_step[:2, 1].max(0).values),
                         ("last", per_step[1, 1])):
        got = time_readout(lin, h_pad, reduce, lengths)
        torch.testing.assert_close(got[1], want)
        torch.testing.assert_close(got[0], time_readout(lin, h, reduce)[0])
    assert readout_macs(lin, "max", 5, 2) == 5 * 2 * 4 * 3
    assert readout_macs(lin, "mean", 5, 2) == readout_macs(lin, "last", 5, 2) == 2 * 4 * 3


@pytest.mark.parametrize("make", [
    lambda r: EGRU((6,), 3, hidden=[8], dropout=0.0, readout_reduce=r),
    lambda r: LTCNet((6,), 3, cell="cfc", units=8, sensory=5, readout_reduce=r),
    lambda r: LTCNet((6,), 3, cell="ltc", units=8, sensory=5, ode_unfolds=2, readout_reduce=r),
])
def test_models_reduce_their_per_step_logits(make):
    torch.manual_seed(1)
    x = (torch.rand(7, 2, 6) < 0.5).float()
    models = {r: make(r).eval() for r in ("mean", "max", "last")}
    for r in ("max", "last"):
        models[r].load_state_dict(models["mean"].state_dict())  # same weights, other readout
    seen = []
    models["max"].readout.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        logits = {r: m(x)[0] for r, m in models.items()}
    h = seen[0].reshape(7, 2, 8)  # the "max" readout sees every step's features
    lin = models["mean"].readout
    with torch.no_grad():
        torch.testing.assert_close(logits["max"], lin(h).max(0).values)
        torch.testing.assert_close(logits["mean"], lin(h.mean(0)))
        torch.testing.assert_close(logits["last"], lin(h[-1]))
    assert not torch.allclose(logits["max"], logits["mean"])
    assert models["max"].op_counts(7, 2)["readout_macs_dense"] == 7 * 2 * 8 * 3
    assert models["mean"].op_counts(7, 2)["readout_macs_dense"] == 2 * 8 * 3
    with pytest.raises(ValueError, match="readout_reduce must be one of"):
        make("sum")
