"""Helpers shared by the tests: devices, error measure, hard inputs and the sort ops' reference.

Imported as ``from helpers import ...`` (pytest puts ``tests/`` on the path: see pyproject.toml)."""

import os
import pathlib

import torch

import fused_sigreg as fs
from fused_sigreg import reference
from fused_sigreg.slicing import normal_quantiles
from fused_sigreg.tools.check import relative_error

GPU = torch.cuda.is_available()
# Where the Triton kernels run: the GPU, else Triton's interpreter on CPU tensors.
TRITON_DEVICE = "cuda" if GPU else "cpu"

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = pathlib.Path(os.environ.get("FUSED_SIGREG_GOLDEN", REPO.parent / "shared" / "golden" / "reference_cases.pt"))
# values and gradients of lejepa, lightly, stable-pretraining and jepa-science (../shared/golden/ECOSYSTEM.md)
ECOSYSTEM = GOLDEN.with_name("ecosystem_cases.pt")


# fp32 results against fp32 eager (relative, max norm): the project's parity budget
FP32_TOL = 1e-5


def value_and_grad(fn, x: torch.Tensor, weight=None):
    """(fn(x), d sum(fn(x) * weight) / dx), both detached; weight 1 when None."""
    x = x.detach().requires_grad_()
    out = fn(x)
    (grad,) = torch.autograd.grad((out * (1.0 if weight is None else weight)).sum(), x)
    return out.detach(), grad


def sigreg_value_and_grad(x: torch.Tensor, a: torch.Tensor, backend, weight=None, **kwargs):
    """``value_and_grad`` of ``sigreg(x, directions=a, backend=backend, **kwargs)``."""
    return value_and_grad(lambda v: fs.sigreg(v, directions=a, backend=backend, **kwargs), x, weight)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``check``'s measure (max |a - b| / max |b|, absolute where b is all zero; inf when anything is
    non-finite, so NaN never passes) on tensors from any device."""
    return relative_error(torch.as_tensor(a).detach().cpu(), torch.as_tensor(b).detach().cpu())


# fp32's spacing at 150 (= 2**-16): the rounding of the argument t*p ~ 3 * 50 of cos/sin alone, i.e. the
# floor any fp32 evaluation of a SIGReg gradient meets at |p| ~ 50.
ULP_150 = 2.0**-16


def fp32_budget(ref32: torch.Tensor, ref64: torch.Tensor, tol: float = 1e-5, factor: float = 4.0) -> float:
    """Error budget for an fp32 result judged against the float64 reference ``ref64``: ``tol``, or
    ``factor`` times the fp32 reference's own error where the problem's conditioning puts that above
    ``tol``. For SIGReg gradients at |p| ~ 50 with few rows, cos/sin of t*p rounded in fp32 carry
    ~1e-5 absolute error per term and the terms cancel, so neither fp32 computation meets 1e-5 there;
    the kernel must then be no worse than a few times the reference (never NaN: ``rel_err`` is inf)."""
    return max(tol, factor * rel_err(ref32, ref64))


def hard_values(rng: torch.Generator, *shape) -> torch.Tensor:
    """Sort inputs with ties, +-0, +-inf and ordinary values mixed."""
    v = torch.randint(-3, 4, shape, generator=rng).float() * 0.5
    specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf")])
    pick = torch.randint(0, 4, shape, generator=rng)
    return torch.where(torch.rand(shape, generator=rng) < 0.2, specials[pick], v)


# The one-sample sort ops by name, with explicit directions (D, K).
SORT_OPS = {
    "sliced_wasserstein": lambda x, a, **kw: fs.sliced_wasserstein(x, directions=a, **kw),
    "sliced_wasserstein_clamped": lambda x, a, **kw: fs.sliced_wasserstein(x, directions=a, quantile_clamp=1e-4, **kw),
    "visreg": lambda x, a, **kw: fs.visreg(x, directions=a, **kw),
}


def stable_sort_formula(op: str, x: torch.Tensor, a: torch.Tensor, target_samples=None) -> torch.Tensor:
    """The reference formula of a sort op (a key of SORT_OPS, or "rdmreg") with a stable sort."""
    n = x.shape[-2]
    if op == "visreg":
        center, scale, x = reference.visreg_terms(x)
    proj = reference.project(x, a)
    if op == "rdmreg":  # only the sorted values of the target matter, not the order of its ties
        target = reference.project(target_samples, a).to(proj.dtype).sort(dim=-2).values
    else:
        target = normal_quantiles(n, 1e-4 if op == "sliced_wasserstein_clamped" else None).to(proj)[:, None]
    shape = (torch.sort(proj, dim=-2, stable=True).values - target).square().mean()
    return shape + scale + center if op == "visreg" else shape


def projections_tie(op: str, x: torch.Tensor, a: torch.Tensor) -> bool:
    x = x.detach()
    if op == "visreg":
        x = reference.visreg_terms(x)[2]
    ordered = reference.project(x, a).sort(dim=-2).values
    return bool((ordered[..., 1:, :] == ordered[..., :-1, :]).any())


def sort_reference(op: str, x: torch.Tensor, a: torch.Tensor, target_samples=None):
    """(value, d value / dx) a stable sort-and-match backend must reproduce: the eager reference's. Where
    projections tie exactly (about once in a few runs at N = 300, K = 129 in fp32; often in 16-bit),
    eager's unstable sort may hand tied rows each other's targets, equally valid; the gradient is then
    the reference formula's with a stable sort, which is what the kernels compute."""
    x = x.detach().requires_grad_()
    if op == "rdmreg":
        value = fs.rdmreg(x, directions=a, target_samples=target_samples, backend="eager")
    else:
        value = SORT_OPS[op](x, a, backend="eager")
    if projections_tie(op, x, a):
        (grad,) = torch.autograd.grad(stable_sort_formula(op, x, a, target_samples), x)
    else:
        (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def ecf_stat_formula(proj: torch.Tensor, t: torch.Tensor, phi: torch.Tensor, weights: torch.Tensor):
    """What the ECF-and-statistic ops (``ecf_stat``, ``ecf_stat_triton``) return, in float64 by torch ops:
    stat (V, K) = N sum_j w_j ((C_j - phi_j)^2 + S_j^2) and base (V, 2, T, K) with
    dstat/dp = sum_j base[:, 0, j] cos(t_j p) + base[:, 1, j] sin(t_j p), the latter by autograd."""
    p = proj.detach().double().requires_grad_()
    t, phi, weights = t.double(), phi.double(), weights.double()
    angles = p.unsqueeze(-1) * t  # (V, N, K, T)
    cos_mean, sin_mean = angles.cos().mean(1), angles.sin().mean(1)  # (V, K, T)
    err = cos_mean - phi
    stat = ((err.square() + sin_mean.square()) * weights).sum(-1) * p.shape[1]
    # d stat / d cos_mean_j = 2 N w_j err_j and d cos_mean_j / dp = -t_j sin(t_j p) / N, likewise for sin
    base = torch.stack((2 * weights * t * sin_mean, -2 * weights * t * err), dim=1).transpose(-1, -2)
    (grad,) = torch.autograd.grad(stat.sum(), p)
    from_base = (angles.cos() * base[:, 0].transpose(-1, -2).unsqueeze(1)).sum(-1) + (
        angles.sin() * base[:, 1].transpose(-1, -2).unsqueeze(1)
    ).sum(-1)
    assert torch.allclose(grad, from_base, rtol=1e-10, atol=1e-12), "base is not stat's derivative"
    return stat.detach(), base.detach()


def check_visreg_terms(
    forward_op, backward_op, center_op, rng: torch.Generator, device, V: int, N: int, D: int
) -> None:
    """A backend's VISReg terms ops (``visreg_terms`` / ``visreg_terms_backward`` / the centring, or their
    Triton twins) against the reference's ``visreg_terms``: the centred values and their norm bit for bit as
    torch computes them, the normalised values bit for bit (they decide the shape term's ranks),
    sigma and the weighted terms to 1e-6, and the backward, grad of grad_out * terms + <factor * g,
    normalised>, against autograd through the reference (sigma held constant in the normalised values,
    as there) to 1e-5. Then a NaN reaches its own column only."""
    z = (torch.randn(V, N, D, generator=rng) * 1.7 + 0.3).to(device)
    sw, cw, factor = 0.7, 1.9, 0.37
    mu = z.mean(dim=-2, keepdim=True)
    centered, norm = center_op(z, mu)
    assert torch.equal(centered, z - mu) and torch.equal(norm, (z - mu).norm(dim=-2))
    normalised, terms, sigma = forward_op(centered, mu, norm, reference.VISREG_STD_EPS, sw, cw)
    zr = z.detach().clone().requires_grad_()
    center, scale, want = reference.visreg_terms(zr)
    assert torch.equal(normalised, want.detach())
    assert rel_err(sigma, centered.norm(dim=-2) / N**0.5 + reference.VISREG_STD_EPS) <= 1e-6
    assert rel_err(terms, sw * scale + cw * center) <= 1e-6
    g = torch.randn(V, N, D, generator=rng).to(device)
    grad_out = torch.tensor(1.3, device=device)
    # grad_out scales the terms; the shape term's incoming gradient g carries its own
    ((sw * scale + cw * center) * grad_out + factor * (g * want).sum()).backward()
    got = backward_op(g, centered, mu, sigma, norm, grad_out, factor, sw, cw)
    assert rel_err(got, zr.grad) <= 1e-5
    z[-1, N // 2, D - 1] = float("nan")
    mu = z.mean(dim=-2, keepdim=True)
    centered = z - mu
    normalised, terms, sigma = forward_op(centered, mu, centered.norm(dim=-2), reference.VISREG_STD_EPS, sw, cw)
    assert terms.isnan() and normalised[-1, :, -1].isnan().all() and normalised[..., :-1].isfinite().all()
