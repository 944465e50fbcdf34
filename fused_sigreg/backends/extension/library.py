"""Loads the compiled extension ``fused_sigreg._C`` (ops from ``csrc/``, schemas in ``csrc/ops.cpp``) if it was built.

Without it everything still works on the other backends; importing warns once.
"""

from __future__ import annotations

import warnings

import torch

# every op of csrc/ops.cpp the Python side calls
OPS = (
    "sort_match",
    "sort_match_loss",
    "sort_match_loss_backward",
    "sort_stat",
    "sort_nll",
    "moment_stat",
    "moment_stat_backward",
    "ecf_sums",
    "ecf_stat",
    "ecf_grad",
    "ecf_grad_",
    "center_norm",
    "visreg_terms",
    "visreg_terms_backward",
)


def missing_ops(namespace, names=OPS) -> list:
    """The names ``namespace`` (``torch.ops.fused_sigreg``) lacks: a library built from older sources."""
    return [name for name in names if not hasattr(namespace, name)]


try:
    from ... import _C  # noqa: F401  (loading the library registers the fused_sigreg::* ops)

    _missing = missing_ops(torch.ops.fused_sigreg)
    _LOAD_ERROR = (
        f"it was built from older sources and lacks fused_sigreg::{', '.join(_missing)} (rebuild it: "
        "pip install -e . or make install)"
        if _missing
        else None
    )
except ImportError as e:  # not built (FUSED_SIGREG_BUILD_EXT=0, no compiler) or built for another torch
    _LOAD_ERROR = str(e)
if _LOAD_ERROR is not None:
    warnings.warn(
        f"fused_sigreg: the compiled extension is not available ({_LOAD_ERROR}); the 'cpu' and 'cuda' backends "
        "are off and their ops run on eager",
        RuntimeWarning,
        stacklevel=2,
    )


def _check_proj(proj, dims: int) -> None:
    torch._check(proj.dim() == dims, lambda: f"proj must have {dims} dimensions, got shape {tuple(proj.shape)}")
    torch._check(proj.dtype == torch.float32, lambda: f"proj must be float32, got {proj.dtype}")


def _check_coef(proj, coef) -> None:
    _check_proj(proj, 3)
    torch._check(
        coef.dim() == 4 and coef.shape[0] == proj.shape[0] and coef.shape[1] == 2 and coef.shape[3] == proj.shape[2],
        lambda: f"coef must be (V, 2, T, K) for proj {tuple(proj.shape)}, got {tuple(coef.shape)}",
    )


if _LOAD_ERROR is None:  # output shapes for fake tensors (torch.compile, opcheck), with the kernels' input checks

    @torch.library.register_fake("fused_sigreg::sort_match")
    def _(proj, target):
        _check_proj(proj, 2)
        torch._check(
            target.shape == proj.shape or tuple(target.shape) == (proj.shape[1],),
            lambda: f"target must be (N,) or {tuple(proj.shape)}, got {tuple(target.shape)}",
        )
        return proj.new_empty((proj.shape[0],)), proj.new_empty(proj.shape)

    @torch.library.register_fake("fused_sigreg::sort_match_loss")
    def _(x, directions, target):
        torch._check(
            x.dim() == 3 and x.dtype == torch.float32, lambda: f"x must be (V, N, D) float32, got {tuple(x.shape)}"
        )
        torch._check(
            directions.dim() == 2 and directions.shape[0] == x.shape[2],
            lambda: f"directions must be (D, K) with D = {x.shape[2]}, got {tuple(directions.shape)}",
        )
        V, N, _ = x.shape
        return x.new_empty(()), x.new_empty((V * directions.shape[1], N))

    @torch.library.register_fake("fused_sigreg::sort_match_loss_backward")
    def _(grad, directions, grad_out, scale):
        K = directions.shape[1]
        return grad.new_empty((grad.shape[0] // K, grad.shape[1], directions.shape[0]))

    @torch.library.register_fake("fused_sigreg::sort_stat")
    def _(proj, statistic, eps, m, weights, closed):
        _check_proj(proj, 2)
        return proj.new_empty((proj.shape[0],)), proj.new_empty(proj.shape)

    @torch.library.register_fake("fused_sigreg::sort_nll")
    def _(proj, constant, cutoffs, closed):
        _check_proj(proj, 2)
        torch._check(
            constant.shape == (proj.shape[1],),
            lambda: f"constant must be ({proj.shape[1]},), got {tuple(constant.shape)}",
        )
        return proj.new_empty(proj.shape), proj.new_empty(proj.shape), proj.new_empty(proj.shape, dtype=torch.int64)

    @torch.library.register_fake("fused_sigreg::moment_stat")
    def _(proj, statistic, k_max, closed):
        _check_proj(proj, 3)
        B, _, K = proj.shape
        degree = k_max if statistic == 0 else 4
        return proj.new_empty((B, K)), proj.new_empty((B, degree, K), dtype=torch.float64), proj.new_empty((B, K))

    @torch.library.register_fake("fused_sigreg::moment_stat_backward")
    def _(proj, coef, centre, grad_out):
        _check_proj(proj, 3)
        return proj.new_empty(proj.shape)

    @torch.library.register_fake("fused_sigreg::ecf_sums")
    def _(proj, delta, n_points):
        _check_proj(proj, 3)
        return proj.new_empty((proj.shape[0], 2, n_points, proj.shape[2]))

    @torch.library.register_fake("fused_sigreg::ecf_stat")
    def _(proj, delta, t, phi, weights):
        _check_proj(proj, 3)
        V, _, K = proj.shape
        return proj.new_empty((V, K)), proj.new_empty((V, 2, t.shape[0], K))

    @torch.library.register_fake("fused_sigreg::ecf_grad")
    def _(proj, coef, delta):
        _check_coef(proj, coef)
        return torch.empty_like(proj)

    @torch.library.register_fake("fused_sigreg::ecf_grad_")
    def _(proj, coef, delta):
        _check_coef(proj, coef)
        return None

    @torch.library.register_fake("fused_sigreg::center_norm")
    def _(z, mu):
        _check_proj(z, 3)
        V, _, D = z.shape
        return torch.empty_like(z), z.new_empty((V, D))

    @torch.library.register_fake("fused_sigreg::visreg_terms")
    def _(centered, mu, norm, eps, scale_weight, center_weight):
        _check_proj(centered, 3)
        V, _, D = centered.shape
        return torch.empty_like(centered), centered.new_empty(()), centered.new_empty((V, D))

    @torch.library.register_fake("fused_sigreg::visreg_terms_backward")
    def _(grad_normalised, centered, mu, sigma, norm, grad_out, shape_factor, scale_weight, center_weight):
        _check_proj(centered, 3)
        return torch.empty_like(centered)


def available():
    if _LOAD_ERROR is None:
        return True, ""
    return False, f"the compiled extension is not built or does not load: {_LOAD_ERROR}"


# Fixed once the library is loaded; a plain dict keeps the lookup traceable by torch.compile.
_KERNELS = {
    (op, key): _LOAD_ERROR is None and torch._C._dispatch_has_kernel_for_dispatch_key(f"fused_sigreg::{op}", key)
    for op in ("sort_match", "sort_stat", "moment_stat", "moment_stat_backward")
    + ("ecf_sums", "ecf_stat", "ecf_grad", "ecf_grad_", "center_norm", "visreg_terms", "visreg_terms_backward")
    for key in ("CPU", "CUDA")
}


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``fused_sigreg::<op>`` has a kernel for ``dispatch_key`` ("CPU", "CUDA")."""
    return _KERNELS.get((op, dispatch_key), False)
