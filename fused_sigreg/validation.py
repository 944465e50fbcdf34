"""Argument checks shared by every op: each failure names what was expected and what arrived."""

from __future__ import annotations

import math
import numbers

import torch

REDUCTIONS = ("mean", "sum", None)


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def check_embeddings(x, name: str = "x") -> None:
    """x must be a floating tensor (*, N, D) with no empty dimension (N = 1 included)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name} must be (*, N, D) with at least 2 dims, got {x.dim()} ({_describe(x)})")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got {_describe(x)}")


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """Raise on NaN/inf (opt-in: ``check_finite=True``; the default propagates them like the reference).
    The ops call it through ``ops.outside_graph.check_finite``, which runs between torch.compile's graphs."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite, got {bad} non-finite values ({_describe(x)})")


def check_directions(
    directions, dim: int, device: torch.device, name: str = "directions", transposed: bool = False
) -> None:
    """directions must be a floating (D, K) tensor on ``device`` with D matching the embeddings;
    ``transposed``: a (K, D) one (the official ``projections`` layout)."""
    if not isinstance(directions, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(directions).__name__}")
    if not directions.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {directions.dtype}")
    d_axis = 1 if transposed else 0
    if directions.dim() != 2 or directions.shape[d_axis] != dim or directions.shape[1 - d_axis] < 1:
        layout = f"(M, D) = (M >= 1, {dim})" if transposed else f"(D, K) = ({dim}, K >= 1)"
        raise ValueError(f"{name} must be {layout}, got {_describe(directions)}")
    if directions.device != device:
        raise ValueError(f"{name} must be on the embeddings' device {device}, got {directions.device}")


def as_int(value, name: str, minimum: int) -> int:
    """``value`` as a Python int >= ``minimum``; numpy and other integral types are accepted, bools and
    floats are not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_number(value, name: str, low: float = -math.inf, high: float = math.inf, low_open: bool = False) -> None:
    """A real number (not a bool) in [low, high) — (low, high) when ``low_open``; NaN fails."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    # comparisons, not math.isfinite: they also hold for torch.compile's symbolic floats (NaN fails both)
    above = low < value if low_open else low <= value
    if not (above and value < high):
        if high == math.inf:
            bound = f"{'>' if low_open else '>='} {low:g}" if low > -math.inf else ""
            raise ValueError(f"{name} must be a finite number {bound}".rstrip() + f", got {value!r}")
        interval = f"{'(' if low_open else '['}{low:g}, {high:g})"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def check_quadrature(t_max, n_points) -> None:
    as_int(n_points, "n_points", 2)
    check_number(t_max, "t_max", 0.0, low_open=True)


def check_reduction(reduction) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', None, got {reduction!r}")


def check_memory(memory) -> None:
    if memory not in ("auto", "min"):
        raise ValueError(f"memory must be 'auto' or 'min', got {memory!r}")


def check_lp_parameter(p) -> None:
    check_number(p, "p (the generalized Gaussian shape)", 0.0, low_open=True)


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"{name_b} must be a torch.Tensor, got {type(b).__name__}")
    if a.shape != b.shape or a.device != b.device:
        raise ValueError(f"{name_b} must match {name_a} ({_describe(a)}), got {_describe(b)}")
    if not b.is_floating_point():
        raise TypeError(f"{name_b} must have a floating dtype, got {b.dtype}")


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics accumulate in float32, or float64 when the input is float64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32
