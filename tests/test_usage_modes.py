"""Every way a PyTorch user calls the ops — autocast, torch.compile, torch.func, double backward,
retain_graph, mixed dtypes — equals eager or raises an error that names the cause and the fix."""

import pytest
import torch

import fused_sigreg as fs
from fused_sigreg import dispatch
from helpers import FP32_TOL, TRITON_DEVICE, projections_tie, rel_err

OPS = dispatch.OPS


def _usable(backend):
    if backend in (None, "eager"):
        return True
    ok, why = fs.available_backends()[backend]
    if not ok:
        pytest.skip(f"backend {backend!r} is not usable here: {why}")
    return True


def _device(backend):
    return TRITON_DEVICE if backend == "triton" else "cpu"


def _problem(op, rng, device, n=40, d=12, k=9):
    """Inputs whose projections have no exact tie (for the sort ops): at a tie the sorted order, and
    with it the gradient, is not unique (one fp32 draw in ~1000 has one at these sizes)."""
    while True:
        x = torch.randn(n, d, generator=rng)
        if op == "rdmreg":
            x = x.relu()
        a = torch.nn.functional.normalize(torch.randn(d, k, generator=rng), dim=0)
        kwargs = {"target_samples": torch.rand(n, d, generator=rng).to(device)} if op == "rdmreg" else {}
        if op == "sigreg" or not projections_tie(op, x, a):
            return x.to(device), a.to(device), kwargs


def _call(op, x, a, backend, **kwargs):
    return getattr(fs, op)(x, directions=a, backend=backend, **kwargs)


def _op_value_and_grad(op, x, a, backend, **kwargs):
    x = x.detach().requires_grad_()
    value = _call(op, x, a, backend, **kwargs)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", [None, "eager", "cpu", "triton"])
@pytest.mark.parametrize("op", OPS)
def test_autocast_changes_nothing(rng, op, backend, dtype):
    """The ops run with autocast off: inside an autocast region they give the same bits as outside,
    for the input's own dtype, and the result is float32 on every backend."""
    _usable(backend)
    device = _device(backend)
    x, a, kwargs = _problem(op, rng, device)
    x = x.to(dtype)
    expected = _op_value_and_grad(op, x, a, backend, **kwargs)
    v = x.detach().requires_grad_()
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        value = _call(op, v, a, backend, **kwargs)
    value.backward()  # outside the region, as torch's autocast recipe has it
    assert value.dtype == torch.float32
    assert torch.equal(value.detach(), expected[0]) and torch.equal(v.grad, expected[1])


@pytest.mark.parametrize("backend", [None, "cpu", "triton"])
@pytest.mark.parametrize("target_dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_rdmreg_target_samples_of_another_dtype(rng, backend, target_dtype):
    """Target samples of any float dtype are used in z's compute dtype (float32 here), on every backend."""
    _usable(backend)
    device = _device(backend)
    z, a, kwargs = _problem("rdmreg", rng, device)
    target = kwargs["target_samples"].to(target_dtype)
    value, grad = _op_value_and_grad("rdmreg", z, a, backend, target_samples=target)
    ref_value, ref_grad = _op_value_and_grad("rdmreg", z, a, "eager", target_samples=target.float())
    assert value.dtype == torch.float32
    assert rel_err(value, ref_value) <= FP32_TOL and rel_err(grad, ref_grad) <= FP32_TOL


@pytest.mark.parametrize("backend", [None, "cpu", "triton"])
@pytest.mark.parametrize("directions_dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("op", OPS)
def test_directions_of_another_dtype(rng, op, directions_dtype, backend):
    """Directions of another float dtype than x (float32 here) give what eager gives, on every backend."""
    _usable(backend)
    x, a, kwargs = _problem(op, rng, _device(backend))
    a = a.to(directions_dtype)
    value, grad = _op_value_and_grad(op, x, a, backend, **kwargs)
    ref_value, ref_grad = _op_value_and_grad(op, x, a, "eager", **kwargs)
    assert value.dtype == torch.float32
    assert rel_err(value, ref_value) <= FP32_TOL and rel_err(grad, ref_grad) <= FP32_TOL


@pytest.mark.parametrize("op", OPS)
def test_torch_func_on_the_default_path_equals_eager(rng, op):
    x, a, kwargs = _problem(op, rng, "cpu")
    fn = lambda v: _call(op, v, a, None, **kwargs)
    eager = lambda v: _call(op, v, a, "eager", **kwargs)
    assert rel_err(torch.func.grad(fn)(x), torch.func.grad(eager)(x)) <= FP32_TOL
    assert rel_err(torch.func.jacrev(fn)(x), torch.func.jacrev(eager)(x)) <= FP32_TOL
    views = torch.stack([x, x.flip(0), 2 * x])
    if op == "rdmreg":
        fn_v = lambda v: _call(op, v, a, None, target_samples=kwargs["target_samples"])
    else:
        fn_v = fn
    assert rel_err(torch.func.vmap(fn_v)(views), torch.stack([eager(v) for v in views])) <= FP32_TOL


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_torch_func_with_a_forced_fused_backend_says_to_use_eager(rng, backend):
    _usable(backend)
    x, a, _ = _problem("sigreg", rng, _device(backend))
    with pytest.raises(fs.BackendUnavailableError, match="torch.func transforms.*backend='eager'"):
        torch.func.grad(lambda v: fs.sigreg(v, directions=a, backend=backend))(x)


@pytest.mark.parametrize("backend", [None, "cpu", "triton"])
@pytest.mark.parametrize("op", OPS)
def test_double_backward_raises_on_fused_backends_and_works_on_eager(rng, op, backend):
    """create_graph=True through a fused backward raises, naming the fix, instead of silently dropping
    the second-order term; eager gives it (float64 gradgradcheck)."""
    _usable(backend)
    x, a, kwargs = _problem(op, rng, _device(backend))
    v = x.detach().requires_grad_()
    with pytest.raises(RuntimeError, match="create_graph=True.*backend='eager'"):
        (g,) = torch.autograd.grad(_call(op, v, a, backend, **kwargs), v, create_graph=True)
        g.square().sum().backward()
    # first-order gradients are unaffected (create_graph=False)
    assert rel_err(
        _op_value_and_grad(op, x, a, backend, **kwargs)[1], _op_value_and_grad(op, x, a, "eager", **kwargs)[1]
    ) <= (FP32_TOL)


@pytest.mark.parametrize("op", OPS)
def test_double_backward_on_eager(rng, op):
    x, a, kwargs = _problem(op, rng, "cpu", n=7, d=4, k=3)
    if op == "rdmreg":  # rectified rows of zeros tie exactly, where the sort's derivative jumps
        x = torch.randn(7, 4, generator=rng).abs() + 0.1
    x, a = x.double().requires_grad_(), a.double()
    kwargs = {k: t.double() for k, t in kwargs.items()}
    if op == "visreg":  # its gradient holds sigma constant (stop-gradient): not the derivative gradgradcheck expects
        (g,) = torch.autograd.grad(_call(op, x, a, "eager", **kwargs), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), x)
        assert torch.isfinite(gg).all() and gg.abs().sum() > 0
    else:
        torch.autograd.gradgradcheck(lambda v: _call(op, v, a, "eager", **kwargs), (x,))


def test_second_backward_on_cpu_sigreg_says_what_to_do(rng):
    x, a, _ = _problem("sigreg", rng, "cpu")
    x.requires_grad_()
    value = fs.sigreg(x, directions=a, backend="cpu")
    value.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backpropagated once.*backend='eager'"):
        value.backward()
    value = fs.sigreg(x, directions=a, backend="eager")  # eager keeps what it needs
    value.backward(retain_graph=True)
    value.backward()


@pytest.mark.parametrize("mode", ["plain", "fullgraph", "dynamic", "mark_dynamic"])
@pytest.mark.parametrize("op", OPS)
def test_torch_compile_with_changing_batch_equals_eager(rng, registry, op, mode):
    """Plain, fullgraph=True (recompiling as N changes), dynamic=True and mark_dynamic (both with
    fullgraph=True), forward and backward, on the default path, from a fresh registry (nothing
    logged yet: logging must not break tracing)."""
    torch._dynamo.reset()
    _, a, _ = _problem(op, rng, "cpu")
    options = {"fullgraph": mode != "plain", "dynamic": True if mode == "dynamic" else None}
    compiled = torch.compile(lambda v, **kw: _call(op, v, a, None, **kw), **options)
    for n in (40, 40, 28, 52):
        x, _, kwargs = _problem(op, rng, "cpu", n=n)
        v = x.detach().requires_grad_()
        if mode == "mark_dynamic":
            torch._dynamo.mark_dynamic(v, 0)
            for t in kwargs.values():
                torch._dynamo.mark_dynamic(t, 0)
        value = compiled(v, **kwargs)
        (grad,) = torch.autograd.grad(value, v)
        ref_value, ref_grad = _op_value_and_grad(op, x, a, "eager", **kwargs)
        assert rel_err(value, ref_value) <= FP32_TOL and rel_err(grad, ref_grad) <= FP32_TOL, n


def test_torch_compile_dynamic_draws_rdmreg_targets(rng):
    """RDMReg's own target draw (no target_samples) traces with symbolic batch sizes."""
    torch._dynamo.reset()
    _, a, _ = _problem("rdmreg", rng, "cpu")
    compiled = torch.compile(lambda v: fs.rdmreg(v, directions=a), fullgraph=True, dynamic=True)
    for n in (40, 28):
        z = _problem("rdmreg", rng, "cpu", n=n)[0].requires_grad_()
        value = compiled(z)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(z.grad).all()


MODULES = {
    "SIGReg": lambda: fs.SIGReg(8),
    "SlicedWasserstein": lambda: fs.SlicedWasserstein(8),
    "VISReg": lambda: fs.VISReg(8),
    "RDMReg": lambda: fs.RDMReg(8),
}


@pytest.mark.parametrize("kwargs", [{"step": 3}, {"generator": "gen"}], ids=["step", "generator"])
def test_fullgraph_with_a_drawn_direction_names_directions(rng, kwargs):
    """A torch.Generator cannot live in a graph: fullgraph=True names the fix instead of dynamo's
    generic "opaque object" error; without fullgraph the draw runs between graphs and equals eager."""
    torch._dynamo.reset()
    x = torch.randn(2, 16, 6, generator=rng)
    make = lambda: {k: torch.Generator().manual_seed(5) if v == "gen" else v for k, v in kwargs.items()}
    given = make()
    with pytest.raises(Exception, match="pass directions="):
        torch.compile(lambda v: fs.sigreg(v, **given), fullgraph=True)(x)
    given = make()
    assert rel_err(torch.compile(lambda v: fs.sigreg(v, **given))(x), fs.sigreg(x, **make())) <= FP32_TOL


@pytest.mark.parametrize("name", MODULES)
def test_compiled_modules_neither_recompile_per_step_nor_drift(rng, name):
    """The step is read and the directions drawn outside the graph: no guard on the step, so no
    recompilation per call; values equal an eager module's call for call; fullgraph names directions=."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    x = torch.randn(2, 16, 6, generator=rng).relu()
    module, eager = MODULES[name](), MODULES[name]()
    counter = CompileCounter()
    compiled = torch.compile(module, backend=counter)
    assert torch.allclose(compiled(x), eager(x), **FP32_TOL_KW)
    frames = counter.frame_count
    for _ in range(4):
        assert torch.allclose(compiled(x), eager(x), **FP32_TOL_KW)
    assert counter.frame_count == frames and int(module.global_step) == 5
    with pytest.raises(Exception, match="pass directions="):
        torch.compile(MODULES[name](), fullgraph=True)(x)


FP32_TOL_KW = dict(rtol=FP32_TOL, atol=1e-7)


def test_check_finite_under_fullgraph_names_check_finite(rng):
    torch._dynamo.reset()
    x = torch.randn(16, 6, generator=rng)
    a = torch.nn.functional.normalize(torch.randn(6, 5, generator=rng), dim=0)
    with pytest.raises(Exception, match="check_finite=True reads the tensor on the host"):
        torch.compile(lambda v: fs.sigreg(v, directions=a, check_finite=True), fullgraph=True)(x)
    compiled = torch.compile(lambda v: fs.sigreg(v, directions=a, check_finite=True))
    assert rel_err(compiled(x), fs.sigreg(x, directions=a)) <= FP32_TOL
    with pytest.raises(ValueError, match="x must be finite"):
        compiled(torch.full_like(x, float("nan")))


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("name", MODULES)
def test_checkpointed_module_raises_instead_of_recomputing_with_the_next_step(rng, name, reentrant):
    """Recomputing a module's forward would draw the next step's directions: the gradient of another
    loss. It raises, naming checkpointing and the fix; the step advanced once."""
    from torch.utils.checkpoint import checkpoint

    module = MODULES[name]()
    x = torch.randn(2, 16, 6, generator=rng).relu().requires_grad_()
    loss = checkpoint(lambda v: module(v * 1.0), x, use_reentrant=reentrant)
    with pytest.raises(RuntimeError, match="activation checkpointing"):
        loss.backward()
    assert int(module.global_step) == 1


@pytest.mark.parametrize("op", OPS)
def test_checkpointed_functional_ops_equal_eager_or_raise(rng, op):
    """step= (SIGReg) and directions= recompute the same directions: equal gradients; generator= has
    moved on by the recompute, so it raises."""
    from torch.utils.checkpoint import checkpoint

    x, a, kwargs = _problem(op, rng, "cpu")
    x = x.requires_grad_()
    source = {"step": 4} if op == "sigreg" else {"directions": a}
    f = lambda v: getattr(fs, op)(v * 1.0, **source, **kwargs)
    (want,) = torch.autograd.grad(f(x), x)
    (got,) = torch.autograd.grad(checkpoint(f, x, use_reentrant=False), x)
    assert torch.equal(got, want)
    extra = {"target_samples": kwargs["target_samples"]} if op == "rdmreg" else {}
    g = lambda v: (
        getattr(fs, op)(v * 1.0, num_projections=9, generator=torch.Generator().manual_seed(1), **extra)
        if op != "sigreg"
        else fs.sigreg(v * 1.0, num_slices=9, generator=gen)
    )
    gen = torch.Generator().manual_seed(1)
    with pytest.raises(RuntimeError, match="activation checkpointing"):
        checkpoint(g, x, use_reentrant=False).backward()


@pytest.mark.parametrize("op", OPS)
def test_forward_ad_on_the_default_path_equals_eager(rng, op):
    """torch.autograd.forward_ad routes to eager (the kernels have no jvp); a forced kernel backend
    raises naming backend='eager'."""
    from torch.autograd import forward_ad

    x, a, kwargs = _problem(op, rng, "cpu")
    tangent = torch.randn(x.shape, generator=rng)
    with forward_ad.dual_level():
        out = _call(op, forward_ad.make_dual(x, tangent), a, None, **kwargs)
        jvp = forward_ad.unpack_dual(out).tangent
    _, want = torch.func.jvp(lambda v: _call(op, v, a, "eager", **kwargs), (x,), (tangent,))
    assert rel_err(jvp, want) <= FP32_TOL
    with forward_ad.dual_level(), pytest.raises(ValueError, match="backend='eager'"):
        _call(op, forward_ad.make_dual(x, tangent), a, "cpu", **kwargs)


@pytest.mark.parametrize("backend", [None, "cpu", "triton"])
@pytest.mark.parametrize("op", OPS)
def test_batched_backward_equals_row_by_row(rng, op, backend):
    """is_grads_batched=True (and jacobian(vectorize=True)) vmaps the backward: equal to one backward
    per output gradient."""
    _usable(backend)
    x, a, kwargs = _problem(op, rng, _device(backend), n=12, d=6, k=5)
    x = x.requires_grad_()
    out = _call(op, x, a, backend, reduction=None, **kwargs) if op == "sigreg" else _call(op, x, a, backend, **kwargs)
    seeds = torch.randn(3, *out.shape, generator=rng).to(out.device)
    (batched,) = torch.autograd.grad(out, x, seeds, is_grads_batched=True, retain_graph=True)
    rows = [
        torch.autograd.grad(
            _call(op, x, a, "eager", **kwargs) if op != "sigreg" else _call(op, x, a, "eager", reduction=None), x, s
        )[0]
        for s in seeds
    ]
    assert rel_err(batched, torch.stack(rows)) <= FP32_TOL
