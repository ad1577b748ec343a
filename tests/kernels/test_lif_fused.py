"""Fused CPU (numba) LIF-family kernels against the reference loop (spiking/kernels/lif.py).

Outputs, final state, trajectory and every gradient (input, initial state, all Params
tensors) are compared; every kernel output buffer is pre-filled with NaN (fused.PREFILL) and a
call counter proves that the fused path ran.
"""

import itertools
import math

import pytest
import torch
from fused_helpers import assert_close, assert_time_summed_loss_grads, run_and_grad

import spiking
from spiking import surrogate as S
from spiking.kernels import fused
from spiking.kernels import lif as K
from spiking.kernels.dispatch import BackendUnavailable

pytest.importorskip("numba", reason="numba is not installed: the fused CPU backend needs it")
from spiking.kernels.cpu import lif as CPU
from spiking.kernels.cpu import lif_backward as B

KINDS = {  # name: (has synapse, has adaptation)
    "lif": (False, False), "cuba": (True, False), "alif": (False, True), "alif_syn": (True, True),
}


@pytest.fixture(autouse=True)
def nan_prefill(monkeypatch):
    monkeypatch.setattr(fused, "PREFILL", float("nan"))


def make_case(kind, *, per_neuron, dtype, shape=(23, 3, 300), reset="subtract", delay=False,
              current_first=True, surrogate="atan", seed=0):
    g = torch.Generator().manual_seed(seed)
    syn, ada = KINDS[kind]
    n = shape[-1]
    pshape = (n,) if per_neuron else ()

    def rnd(lo, hi):
        return (lo + (hi - lo) * torch.rand(pshape, generator=g, dtype=torch.float64)).to(
            dtype).requires_grad_()
    p = K.LIFParams(
        alpha_mem=rnd(0.7, 0.95), threshold=rnd(0.8, 1.2),
        alpha_syn=rnd(0.5, 0.9) if syn else None, alpha_adapt=rnd(0.8, 0.99) if ada else None,
        adapt_jump=rnd(0.1, 0.5) if ada else 0.0, gain=rnd(0.8, 1.2), v_leak=rnd(-0.1, 0.1),
        v_reset=rnd(-0.2, 0.0), reset=reset, reset_delay=delay, current_first=current_first,
        surrogate=S.get(surrogate))
    x = (torch.rand(shape, generator=g, dtype=torch.float64) * 0.8).to(dtype).requires_grad_()
    st = shape[1:]
    state = K.LIFState(
        v=(torch.rand(st, generator=g, dtype=torch.float64) * 1.2).to(dtype).requires_grad_(),
        i=(torch.rand(st, generator=g, dtype=torch.float64) * 0.3).to(dtype).requires_grad_()
        if syn else None,
        a=(torch.rand(st, generator=g, dtype=torch.float64) * 0.3).to(dtype).requires_grad_()
        if ada else None)
    leaves = [x, *[s for s in state if s is not None],
              *[v for v in p if isinstance(v, torch.Tensor)]]
    return x, state, p, leaves


def compare(x, state, p, leaves, dtype, record=True):
    calls = dict(CPU.CALLS)
    ref = run_and_grad(lambda *a: K.run(*a[:3], backend="reference", record=a[3]), x, state, p,
                       leaves, record)
    got = run_and_grad(lambda *a: K.run(*a[:3], backend="cpu", record=a[3]), x, state, p,
                       leaves, record)
    assert CPU.CALLS["fwd"] == calls["fwd"] + 1 and CPU.CALLS["bwd"] == calls["bwd"] + 1, \
        "the fused CPU kernels did not run"
    assert_close("spikes", got[0], ref[0], dtype, exact=True)
    for f in K.LIFState._fields:
        assert_close(f"final.{f}", getattr(got[1], f), getattr(ref[1], f), dtype, exact=True)
        if record:
            assert_close(f"traj.{f}", getattr(got[2], f), getattr(ref[2], f), dtype, exact=True)
    for k, (a, b) in enumerate(zip(got[3], ref[3])):
        assert_close(f"grad[{k}]", a, b, dtype)


@pytest.mark.parametrize("kind, reset, delay, per_neuron, dtype", [
    c for c in itertools.product(KINDS, ("subtract", "zero", "none"), (False, True),
                                 (False, True), (torch.float64, torch.float32))])
def test_lif_family_matches_reference(kind, reset, delay, per_neuron, dtype):
    compare(*make_case(kind, per_neuron=per_neuron, dtype=dtype, reset=reset, delay=delay),
            dtype)


@pytest.mark.parametrize("kind", ["cuba", "alif_syn"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_current_last(kind, dtype):
    compare(*make_case(kind, per_neuron=True, dtype=dtype, current_first=False), dtype)


@pytest.mark.parametrize("surrogate", ["atan", "fast_sigmoid", "sigmoid", "triangle",
                                       "straight_through"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["alif_syn", "lif"])  # general and plain-LIF backward kernels
def test_every_builtin_surrogate(surrogate, dtype, kind):
    compare(*make_case(kind, per_neuron=True, dtype=dtype, surrogate=surrogate), dtype)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 4, 5), (1000, 1, 3), (5, 3, 257),
                                   (3, 2, 600)])
def test_awkward_sizes(shape):
    compare(*make_case("cuba", per_neuron=True, dtype=torch.float64, shape=shape),
            torch.float64)


def test_record_false_and_rank4_input_with_broadcast_params():
    x, state, p, leaves = make_case("alif", per_neuron=False, dtype=torch.float64,
                                    shape=(9, 2, 3, 70))
    # per-channel threshold [3, 1] (materialised) and per-neuron alpha_mem [70] (periodic)
    th = torch.linspace(0.8, 1.2, 3, dtype=torch.float64).reshape(3, 1).requires_grad_()
    am = torch.linspace(0.7, 0.95, 70, dtype=torch.float64).requires_grad_()
    p = p._replace(threshold=th, alpha_mem=am)
    leaves = [x, *[s for s in state if s is not None], *[v for v in p
                                                          if isinstance(v, torch.Tensor)]]
    compare(x, state, p, leaves, torch.float64, record=False)


@pytest.mark.parametrize("shared", [fused.LIF_PARAMS, ("threshold", "v_leak"),
                                    ("alpha_mem", "gain", "v_reset")])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_plain_lif_kernels_with_shared_and_per_neuron_params(shared, reset, dtype,
                                                             monkeypatch):
    """Plain LIF without a trajectory runs the plain kernels, which are compiled separately
    for parameters shared by all neurons (passed as scalars) and per-neuron ones (arrays);
    every mix matches the reference, learnable shared parameters included."""
    x, state, p, _ = make_case("lif", per_neuron=True, dtype=dtype, reset=reset,
                               shape=(17, 3, 300))
    p = p._replace(**{f: getattr(p, f).detach()[5].clone().requires_grad_() for f in shared
                      if isinstance(getattr(p, f), torch.Tensor)})
    leaves = [x, state.v, *[v for v in p if isinstance(v, torch.Tensor)]]
    ran = []

    def spy(name, fn, first):  # records the kinds of the 5 parameter arguments
        def run(*args):
            ran.append((name, [type(a).__name__ for a in args[first:first + 5]]))
            return fn(*args)
        return run
    monkeypatch.setattr(CPU, "_fwd_plain", spy("fwd", CPU._fwd_plain, 2))
    monkeypatch.setattr(B, "_BWD_PLAIN", tuple(spy("bwd", k, 8) for k in B._BWD_PLAIN))
    compare(x, state, p, leaves, dtype, record=False)
    kinds = [str(dtype).removeprefix("torch.") if f in shared else "ndarray"
             for f in ("alpha_mem", "threshold", "gain", "v_leak", "v_reset")]
    assert ran == [("fwd", kinds), ("bwd", kinds)]


@pytest.mark.parametrize("kind", ["lif", "cuba"])  # plain and general backward kernels
@pytest.mark.parametrize("loss", ["sum", "spike count"])
def test_gradient_broadcast_over_time_is_read_as_one_row(kind, loss, monkeypatch):
    """The gradient of a sum over steps (``out.sum()``, a loss on spike counts) reaches the
    backward broadcast over time (stride 0); the kernels read its one row instead of a
    materialised copy, with the gradients of the reference."""
    x, state, p, leaves = make_case(kind, per_neuron=True, dtype=torch.float64)
    rows = []
    real = CPU._grad_rows

    def spy(g, dt):
        a = real(g, dt)
        rows.append(a.shape)
        return a
    monkeypatch.setattr(CPU, "_grad_rows", spy)
    assert_time_summed_loss_grads(K.run, x, state, p, leaves, loss, "cpu")
    assert rows == [(1, x[0].numel())]


@pytest.mark.parametrize("kind, reset, delay", [
    ("lif", "subtract", False), ("lif", "zero", False), ("lif", "none", False),  # plain kernel
    ("lif", "zero", True), ("cuba", "subtract", False), ("alif_syn", "zero", True),  # general
])
@pytest.mark.parametrize("learn", [(), ("alpha_mem",), ("threshold", "gain", "v_reset"),
                                   ("alpha_syn", "alpha_adapt", "adapt_jump", "v_leak")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_only_params_that_require_grad(kind, reset, delay, learn, dtype, monkeypatch):
    """Params without requires_grad (fixed tau, threshold, ...) are skipped by the backward
    kernels (their mask bit is 0); the gradients of the others still match the reference."""
    x, state, p, _ = make_case(kind, per_neuron=True, dtype=dtype, reset=reset, delay=delay)
    p = p._replace(**{f: v.detach().requires_grad_(f in learn) for f, v in p._asdict().items()
                      if isinstance(v, torch.Tensor)})
    leaves = [x, *[s for s in state if s is not None],
              *[v for v in p if isinstance(v, torch.Tensor) and v.requires_grad]]
    masks = []
    kernel = fused.KERNELS[("lif_bwd", "cpu")]

    def spy(*args):
        masks.append(fused.param_grad_mask(args[15]))
        return kernel(*args)
    monkeypatch.setitem(fused.KERNELS, ("lif_bwd", "cpu"), spy)
    compare(x, state, p, leaves, dtype)
    want = sum(1 << k for k, n in enumerate(fused.LIF_PARAMS)
               if isinstance(getattr(p, n), torch.Tensor) and getattr(p, n).requires_grad)
    assert masks == [want]


@pytest.mark.parametrize("cls, kw", [
    (spiking.LIF, {"learn_threshold": True, "normalize_input": True}),
    (spiking.CubaLIF, {"learn_threshold": True, "current_first": False}),
    (spiking.ALIF, {"learn_threshold": True, "tau_syn": 5e-3}),
    (spiking.LIF, {"reset": "zero", "reset_delay": True, "v_leak": 0.1, "v_reset": -0.2}),
])
def test_neuron_modules_learnable_tau_and_threshold(cls, kw):
    torch.manual_seed(0)
    m = cls(learn_tau=True, n_neurons=33, backend="reference", **kw).double()
    x = (torch.rand(40, 4, 33, dtype=torch.float64) * 1.5).requires_grad_()
    res = {}
    for backend in ("reference", "cpu"):
        m.backend = backend
        m.zero_grad()
        x.grad = None
        s, st = m(x)
        (s.sum() + sum(f.pow(2).sum() for f in st if f is not None)).backward()
        res[backend] = [s, *[f for f in st if f is not None], x.grad,
                        *[q.grad for q in m.parameters()]]
    assert len(list(m.parameters())) >= 1
    for k, (a, b) in enumerate(zip(res["cpu"], res["reference"])):
        assert_close(f"module[{k}]", a, b, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    m = spiking.CubaLIF(backend="reference")
    x = (torch.rand(20, 2, 50) * 1.5).to(dtype).requires_grad_()
    outs = {}
    for backend in ("reference", "cpu"):
        m.backend = backend
        x.grad = None
        s, st = m(x)
        assert s.dtype == dtype and st.v.dtype == dtype
        (s.float().sum() + st.v.float().sum()).backward()
        outs[backend] = (s, st.v, x.grad)
    for k, (a, b) in enumerate(zip(outs["cpu"], outs["reference"])):
        assert torch.equal(a, b) or k == 2, f"output {k} differs"
    assert_close("grad x", outs["cpu"][2].float(), outs["reference"][2].float(), torch.float32)


def test_custom_surrogate_is_rejected_by_explicit_cpu_backend():
    name = "test_fused_custom"
    if name not in S.available():
        S.register(name, lambda x, a: torch.ones_like(x) * a, default_alpha=1.0)
    m = spiking.LIF(surrogate=name, backend="cpu")
    with pytest.raises(BackendUnavailable, match=name):
        m(torch.rand(3, 2, 4))
    m.backend = "auto"  # auto falls back to the reference, which runs
    s, _ = m(torch.rand(3, 2, 4))
    assert s.shape == (3, 2, 4)


def test_cuda_backend_on_cpu_tensors_raises():
    with pytest.raises(BackendUnavailable, match="cuda"):
        spiking.LIF(backend="cuda")(torch.rand(3, 2, 4))


def test_auto_uses_fused_cpu():
    before = CPU.CALLS["fwd"]
    spiking.ALIF()(torch.rand(4, 2, 3))
    assert CPU.CALLS["fwd"] == before + 1


def test_fused_cpu_kernels_use_torchs_thread_count():
    """numba ignores OMP_NUM_THREADS / torch.set_num_threads; the fused entry points (forward
    and the backward op) must follow torch, or side-by-side 1-thread jobs oversubscribe."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread here")
    before = torch.get_num_threads()
    numba.get_num_threads()  # launch numba's pool first: the launch resets torch's count
    try:
        torch.set_num_threads(1)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        x = torch.rand(5, 2, 300, requires_grad=True)
        out, _ = spiking.LIF()(x)
        assert numba.get_num_threads() == 1
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        out.sum().backward()
        assert numba.get_num_threads() == 1
        torch.set_num_threads(2)
        spiking.LIF()(x)
        assert numba.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_one_thread_job_stays_on_one_thread(one_thread_counts):
    """A fresh process with OMP_NUM_THREADS=1 keeps one thread for torch and numba through
    fused calls (launching numba's OpenMP pool used to raise torch's count to every core)."""
    code = ("import torch, numba, spiking\n"
            "x = torch.rand(5, 2, 300, requires_grad=True)\n"
            "for _ in range(3):\n"
            "    spiking.LIF(backend='cpu')(x)[0].sum().backward()\n"
            "print(torch.get_num_threads(), numba.get_num_threads())\n")
    assert one_thread_counts(code) == ["1", "1"]


def test_opcheck_and_torch_compile():
    x, state, p, _ = make_case("alif_syn", per_neuron=True, dtype=torch.float32,
                               shape=(6, 2, 40))
    m = math.prod(x.shape[1:])
    params = [fused.pack(getattr(p, n) if getattr(p, n) is not None else 0.0, n,
                         tuple(x.shape[1:]), torch.float32, "cpu").detach().requires_grad_()
              for n in fused.LIF_PARAMS]
    args = (x.detach().reshape(6, m).requires_grad_(), state.v.detach().reshape(m),
            state.i.detach().reshape(m), state.a.detach().reshape(m), params,
            [1, 1, 0, 0, 1, 0, 0], 2.0, True)
    torch.library.opcheck(fused.lif_fwd, args)

    def f(x):  # the fused entry point traces into one graph (custom ops + fake impls)
        out, final, traj = CPU.run(x, state, p, record=True)
        return out.sum() + final.v.sum() + traj.v.pow(2).sum()
    eager = torch.autograd.grad(f(x), x)[0]
    compiled = torch.autograd.grad(torch.compile(f, backend="aot_eager", fullgraph=True)(x), x)[0]
    assert_close("compiled grad x", compiled, eager, torch.float32)

    neuron = spiking.ALIF(tau_syn=5e-3, backend="cpu")  # through the module and dispatcher
    before = CPU.CALLS["bwd"]
    y = torch.compile(neuron, backend="aot_eager")(x)[0]
    torch.autograd.grad(y.sum(), x)
    assert CPU.CALLS["bwd"] == before + 1
