"""Shared helpers of the fused-vs-reference kernel tests (LIF family and LI)."""

from __future__ import annotations

import torch

# Tolerances of the comparison, per dtype: max |fused - ref| <= TOL * max(1, max |ref|).
# Forward values must agree bitwise (same operation order, no FMA); gradients are sums in a
# different order, so they are compared on the scale of the reference gradient.
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def max_err(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max abs error, scale) of `a` against reference `b`."""
    a, b = a.detach().double(), b.detach().double()
    return (a - b).abs().max().item() if a.numel() else 0.0, max(1.0, b.abs().max().item()
                                                                  if b.numel() else 1.0)


def assert_close(name: str, got, ref, dtype, exact: bool = False) -> None:
    if ref is None:  # unused by the reference graph: the fused path may return zeros
        assert got is None or not got.any(), f"{name}: expected None or zeros"
        return
    assert got is not None, f"{name}: fused result is None, reference is not"
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(got).all() == torch.isfinite(ref).all(), f"{name}: non-finite values"
    err, scale = max_err(got, ref)
    print(f"{name}: max abs err {err:.3g} (scale {scale:.3g})")
    if exact:
        assert err == 0.0, f"{name}: forward differs from the reference by {err}"
    else:
        assert err <= TOL[dtype] * scale, f"{name}: max abs err {err} > {TOL[dtype]} * {scale}"


def weights_like(t: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.device, t.dtype)


def loss_of(out, final, traj) -> torch.Tensor:
    """A loss touching every output, final-state field and trajectory field with random weights."""
    terms = [(out * weights_like(out, 1)).sum()]
    for k, f in enumerate(final):
        if f is not None:
            terms.append((f * weights_like(f, 10 + k)).sum())
    if traj is not None:
        for k, f in enumerate(traj):
            if f is not None:
                terms.append((f * weights_like(f, 20 + k)).sum())
    return sum(terms)


def run_and_grad(run, x, state, p, leaves, record=True):
    """Run `run(x, state, p, record)`, backprop `loss_of`, return outputs and leaf grads."""
    for t in leaves:
        t.grad = None
    res = run(x, state, p, record)
    out, final = res[0], res[1]
    traj = res[2] if record else None
    loss_of(out, final, traj).backward()
    grads = [None if t.grad is None else t.grad.clone() for t in leaves]
    return out, final, traj, grads


def assert_time_summed_loss_grads(run, x, state, p, leaves, loss: str, backend: str) -> None:
    """The gradients of a loss summed over steps (``loss`` "sum": ``out.sum()``; "spike
    count": weighted spike counts), which reach the backward broadcast over time, through
    ``backend`` equal the reference's (``run(x, state, p, backend=...)``, float64)."""
    w = weights_like(x[0], 3)

    def grads(b):
        for t in leaves:
            t.grad = None
        out = run(x, state, p, backend=b)[0]
        (out.sum() if loss == "sum" else (out.sum(0) * w).sum()).backward()
        return [t.grad for t in leaves]
    ref, got = grads("reference"), grads(backend)
    for k, (a, b) in enumerate(zip(got, ref)):
        assert_close(f"grad[{k}]", a, b, torch.float64)
