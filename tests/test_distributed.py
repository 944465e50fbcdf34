"""Two gloo processes on CPU against (a) the reference's all_reduce semantics and (b) one process
on the concatenated batch (docs/design.md §6)."""

import faulthandler
import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fused_sigreg as fs
from fused_sigreg.compat import lejepa, lightly, rectified_lpjepa, stable_pretraining, visreg
from fused_sigreg.slicing import epps_pulley_quadrature, lejepa_directions

WORLD = 2
N_LOCAL, D, K = 13, 6, 9
STEPS = (3, 7)  # different per rank: both must draw the directions of max = 7


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, WORLD * N_LOCAL, D, generator=g, dtype=torch.float64)
    a = torch.nn.functional.normalize(torch.randn(D, K, generator=g, dtype=torch.float64), dim=0)
    y = torch.relu(torch.randn(2, WORLD * N_LOCAL, D, generator=g, dtype=torch.float64))
    return x, a, y


def _lejepa_semantics(x, a, world=WORLD):
    """lejepa's EppsPulley under DDP, written out with torch.distributed.nn's autograd all_reduce."""
    import torch.distributed.nn.functional as dist_fn

    t, phi, w = (v.double() for v in epps_pulley_quadrature(3.0, 17))
    arg = (x @ a).unsqueeze(-1) * t
    cos_mean = dist_fn.all_reduce(arg.cos().mean(-3), op=dist.ReduceOp.SUM) / world
    sin_mean = dist_fn.all_reduce(arg.sin().mean(-3), op=dist.ReduceOp.SUM) / world
    err = (cos_mean - phi).square() + sin_mean.square()
    return (err @ w) * x.shape[-2] * world


def _grad(fn, x):
    x = x.clone().requires_grad_()
    value = fn(x)
    value.sum().backward()
    return value.detach(), x.grad


def _exit_cleanly():
    """End a worker whose results are saved without interpreter teardown: gloo's worker threads can
    abort a process while Python finalizes (SIGABRT, "terminate called without an active exception";
    pytorch/pytorch#179291), which mp.spawn reports as a failure of the test."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _worker(rank, init_file, out_dir):
    faulthandler.enable(all_threads=True)  # an abort before the results are saved still fails, with a traceback
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, a, y = _inputs()
        local = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        xl = x[:, local]
        zl = torch.relu(xl)
        res = {
            "sigreg": _grad(lambda v: fs.sigreg(v, directions=a, reduction=None), xl),
            "sigreg_ref": _grad(lambda v: _lejepa_semantics(v, a), xl),
            "sigreg_step": fs.sigreg(xl, num_slices=K, step=STEPS[rank], reduction=None),
            "sliced_wasserstein": _grad(lambda v: fs.sliced_wasserstein(v, directions=a, gather=True), xl),
            "visreg": _grad(lambda v: fs.visreg(v, directions=a, gather=True), xl),
            "rdmreg": _grad(lambda v: fs.rdmreg(v, directions=a, target_samples=y, gather=True), zl),
        }
        if os.environ.get("TRITON_INTERPRET") == "1":  # the fused op between the same DDP stages
            res["sigreg_triton"] = _grad(
                lambda v: fs.sigreg(v, directions=a.float(), reduction=None, backend="triton"), xl.float()
            )
            res["sigreg_fp32"] = _grad(
                lambda v: fs.sigreg(v, directions=a.float(), reduction=None, backend="eager"), xl.float()
            )
            for backend in ("triton", "eager"):  # the fused sort on the all-gathered batch
                res[f"visreg_{backend}"] = _grad(
                    lambda v, backend=backend: fs.visreg(v, directions=a.float(), gather=True, backend=backend),
                    xl.float(),
                )
                res[f"rdmreg_{backend}"] = _grad(
                    lambda v, backend=backend: fs.rdmreg(
                        v, directions=a.float(), target_samples=y.float(), gather=True, backend=backend
                    ),
                    zl.float(),
                )
        res["sigreg_cpu"] = _grad(
            lambda v: fs.sigreg(v, directions=a.float(), reduction=None, backend="cpu"), xl.float()
        )
        res["sigreg_fp32_eager"] = _grad(
            lambda v: fs.sigreg(v, directions=a.float(), reduction=None, backend="eager"), xl.float()
        )
        module = fs.SIGReg(num_slices=K, reduction=None)
        module.global_step.fill_(STEPS[rank])
        res["module"] = module(xl).detach()
        res["module_step"] = module.global_step.item()
        # the drop-ins keep each official code's distributed semantics
        test = lejepa.SlicingUnivariateTest(lejepa.EppsPulley(), K, reduction=None)
        test.global_step.fill_(STEPS[rank])
        res["compat_lejepa"] = test(xl).detach()
        sliced = stable_pretraining.SlicedEppsPulley(K)
        sliced.global_step.fill_(STEPS[rank])
        res["compat_stable_pretraining"] = sliced(xl[0]).detach()
        sig = visreg.SIGReg(num_projections=K)
        sig.draw_directions = lambda z: a
        res["compat_visreg_sigreg"] = sig(xl).detach()
        proj = a.t().contiguous()
        torch.manual_seed(1)  # the official code draws its targets from each rank's global RNG
        res["compat_rdmreg"] = _grad(
            lambda v: torch.stack(
                rectified_lpjepa.rectified_lp_jepa_loss(
                    v[0], v[1], proj, "rectified_lp_distribution", 25.0, 125.0, chosen_sigma=1.0
                )
            ),
            zl,
        )
        sorter = fs.VISReg(K, gather=True)
        sorter.global_step.fill_(STEPS[rank])
        res["visreg_module"] = sorter(xl).detach()
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
    _exit_cleanly()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def _local(t, rank):
    return t[:, rank * N_LOCAL : (rank + 1) * N_LOCAL]


def test_sigreg_matches_reference_all_reduce_semantics(ranks):
    for res in ranks:
        value, grad = res["sigreg"]
        ref_value, ref_grad = res["sigreg_ref"]
        assert torch.allclose(value, ref_value, rtol=1e-12, atol=0)
        assert torch.allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)


def test_sigreg_matches_one_process_on_the_whole_batch(ranks):
    x, a, _ = _inputs()
    value, grad = _grad(lambda v: fs.sigreg(v, directions=a, reduction=None), x)
    for rank, res in enumerate(ranks):
        assert torch.allclose(res["sigreg"][0], value, rtol=1e-12)
        # each rank's input gradient is W times the single-process one: DDP's gradient averaging
        # over ranks then yields the single-process gradient, as with the reference.
        assert torch.allclose(res["sigreg"][1], WORLD * _local(grad, rank), rtol=1e-10, atol=1e-15)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton's interpreter (CPU ranks)")
def test_triton_backend_under_ddp_matches_eager(ranks):
    for res in ranks:
        (value, grad), (ref_value, ref_grad) = res["sigreg_triton"], res["sigreg_fp32"]
        assert ((value - ref_value).abs().max() / ref_value.abs().max()).item() <= 1e-5
        assert ((grad - ref_grad).abs().max() / ref_grad.abs().max()).item() <= 1e-5


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton's interpreter (CPU ranks)")
@pytest.mark.parametrize("op", ["visreg", "rdmreg"])
def test_triton_sort_match_under_gather_matches_eager(ranks, op):
    for res in ranks:
        (value, grad), (ref_value, ref_grad) = res[f"{op}_triton"], res[f"{op}_eager"]
        assert ((value - ref_value).abs() / ref_value.abs()).item() <= 1e-5
        assert ((grad - ref_grad).abs().max() / ref_grad.abs().max()).item() <= 1e-5


def test_cpu_extension_backend_under_ddp_matches_eager(ranks):
    for res in ranks:
        (value, grad), (ref_value, ref_grad) = res["sigreg_cpu"], res["sigreg_fp32_eager"]
        assert ((value - ref_value).abs().max() / ref_value.abs().max()).item() <= 1e-5
        assert ((grad - ref_grad).abs().max() / ref_grad.abs().max()).item() <= 1e-5


def test_step_is_synchronised_across_ranks(ranks):
    x, _, _ = _inputs()
    a = lejepa_directions(D, K, max(STEPS)).double()
    expected = fs.sigreg(x, directions=a, reduction=None)
    for rank, res in enumerate(ranks):
        assert torch.allclose(res["sigreg_step"], expected, rtol=1e-12)
        assert torch.allclose(res["module"], expected, rtol=1e-12)
        assert res["module_step"] == STEPS[rank] + 1


def test_modules_share_their_step_seeded_directions(ranks):
    """Sort modules seed their generator with the step's maximum over ranks: every rank draws the same
    directions, so with gather=True every rank computes the whole batch's loss."""
    x, _, _ = _inputs()
    expected = fs.visreg(x, K, generator=torch.Generator().manual_seed(max(STEPS)))
    for res in ranks:
        assert torch.allclose(res["visreg_module"], expected, rtol=1e-12)


def test_compat_adapters_keep_the_official_distributed_semantics(ranks):
    x, a, _ = _inputs()
    z = torch.relu(x)
    # lejepa: ECF averaged over ranks, directions of the maximum step (as the native module)
    whole = fs.sigreg(x, directions=lejepa_directions(D, K, max(STEPS)).double(), reduction=None)
    # stable-pretraining's: lejepa's semantics (stable-pretraining itself returns world_size x the local statistic)
    whole_first_view = fs.sigreg(x[0], directions=lejepa_directions(D, K, max(STEPS)).double())
    # the VISReg repository's SIGReg: each rank's own batch, nothing averaged
    for rank, res in enumerate(ranks):
        assert torch.allclose(res["compat_lejepa"], whole, rtol=1e-12)
        assert torch.allclose(res["compat_stable_pretraining"], whole_first_view, rtol=1e-12)
        own = fs.sigreg(_local(x, rank), directions=a)
        assert torch.allclose(res["compat_visreg_sigreg"], own, rtol=1e-12)
    # Rectified LpJEPA: sim_loss on this rank's batch; reg_loss on both views all-gathered
    torch.manual_seed(1)
    reg = rectified_lpjepa.rdmreg_loss(z[0], z[1], a.t(), "rectified_lp_distribution", chosen_sigma=1.0)
    for rank, res in enumerate(ranks):
        (loss, sim, reg_rank), _ = res["compat_rdmreg"]
        local = _local(z, rank)
        assert torch.allclose(sim, torch.nn.functional.mse_loss(local[0], local[1]), rtol=1e-12)
        assert torch.allclose(reg_rank, reg, rtol=1e-12)
        assert torch.allclose(loss, 25.0 * sim + 125.0 * reg_rank, rtol=1e-12)


@pytest.mark.parametrize("op", ["sliced_wasserstein", "visreg", "rdmreg"])
def test_gather_matches_one_process_on_the_whole_batch(ranks, op):
    x, a, y = _inputs()
    fn = {
        "sliced_wasserstein": lambda v: fs.sliced_wasserstein(v, directions=a),
        "visreg": lambda v: fs.visreg(v, directions=a),
        "rdmreg": lambda v: fs.rdmreg(v, directions=a, target_samples=y),
    }[op]
    value, grad = _grad(fn, torch.relu(x) if op == "rdmreg" else x)
    for rank, res in enumerate(ranks):
        assert torch.allclose(res[op][0], value, rtol=1e-12)
        # all_gather's backward sums every rank's gradient of the (identical) loss: W times one process's
        assert torch.allclose(res[op][1], WORLD * _local(grad, rank), rtol=1e-10, atol=1e-15)


# --------------------------------------------------------------- unequal batches, three ranks

UNEQUAL_N = (5, 9, 13)


def _unequal_inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(sum(UNEQUAL_N), D, generator=g, dtype=torch.float64)
    a = torch.nn.functional.normalize(torch.randn(D, K, generator=g, dtype=torch.float64), dim=0)
    return x, a


def _rows(rank):
    start = sum(UNEQUAL_N[:rank])
    return slice(start, start + UNEQUAL_N[rank])


def _unequal_worker(rank, init_file, out_dir):
    import warnings

    faulthandler.enable(all_threads=True)
    world = len(UNEQUAL_N)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, a = _unequal_inputs()
        xl = x[_rows(rank)]
        res = {
            "sigreg": _grad(lambda v: fs.sigreg(v, directions=a, reduction=None), xl),
            "sigreg_ref": _grad(lambda v: _lejepa_semantics(v, a, world), xl),
            "sliced_wasserstein": _grad(lambda v: fs.sliced_wasserstein(v, directions=a, gather=True), xl),
            "sliced_wasserstein_cpu": _grad(
                lambda v: fs.sliced_wasserstein(v, directions=a.float(), gather=True), xl.float()
            ),
        }
        if rank == 0:  # a metric on one rank only: no collective may run, or it would wait forever
            with fs.single_process():
                res["local"] = fs.sigreg(xl, directions=a, reduction=None)
                res["local_swd"] = fs.sliced_wasserstein(xl, directions=a, gather=True)
        # lightly: SIGReg's ECF and sample count summed over ranks with rank 0's directions; VISRegLoss's
        # regularisation terms on the gathered batch with this rank's own slices, the invariance term local
        torch.manual_seed(100 + rank)
        res["lightly_sigreg"] = _grad(lambda v: lightly.SIGReg(num_vectors=K, gather_distributed=True)(v), xl)
        torch.manual_seed(200 + rank)
        parts = lightly.VISRegLoss(num_slices=K, gather_distributed=True).forward_components(
            local_proj=(0.5 * xl + 0.1).unsqueeze(0), global_proj=xl.unsqueeze(0)
        )
        res["lightly_visreg"] = [t.detach() for t in parts]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fs.sigreg(xl, num_slices=4)
            fs.sigreg(xl, num_slices=4)
            fs.sigreg(xl, num_slices=4, step=1)
        res["warnings"] = [str(w.message) for w in caught if "own random state" in str(w.message)]
        dist.barrier()
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
    _exit_cleanly()


@pytest.fixture(scope="module")
def unequal_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp_unequal")
    world = len(UNEQUAL_N)
    mp.spawn(_unequal_worker, args=(str(tmp / "init"), str(tmp)), nprocs=world, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(world)]


def test_sigreg_with_unequal_batches_is_lejepas_statistic(unequal_ranks):
    """Each rank's ECF means count equally (all_reduce AVG) and the statistic is scaled by N_local * W,
    as lejepa computes it: with unequal batches that is not the whole-batch statistic."""
    x, a = _unequal_inputs()
    whole = fs.sigreg(x, directions=a, reduction=None)
    for res in unequal_ranks:
        value, grad = res["sigreg"]
        ref_value, ref_grad = res["sigreg_ref"]
        assert torch.allclose(value, ref_value, rtol=1e-12) and torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)
        assert not torch.allclose(value, whole, rtol=1e-3)


def test_lightly_gathered_sigreg_is_the_whole_batch_statistic(unequal_ranks):
    """lightly's gather_distributed=True: rank 0's directions, ECF and N summed exactly over ranks."""
    x, _ = _unequal_inputs()
    torch.manual_seed(100)
    a = torch.randn(D, K, dtype=x.dtype)
    value, grad = _grad(lambda v: fs.sigreg(v, directions=a / a.norm(p=2, dim=0), sync=False), x)
    for rank, res in enumerate(unequal_ranks):
        assert torch.allclose(res["lightly_sigreg"][0], value, rtol=1e-12)
        # the autograd all_reduce sums every rank's (identical) incoming gradient
        assert torch.allclose(res["lightly_sigreg"][1], len(UNEQUAL_N) * grad[_rows(rank)], rtol=1e-10, atol=1e-15)


def test_lightly_gathered_visreg_regularises_the_whole_batch(unequal_ranks):
    x, _ = _unequal_inputs()
    views = torch.stack([x, 0.5 * x + 0.1])
    for rank, res in enumerate(unequal_ranks):
        total, pred, scale, shape, center = res["lightly_visreg"]
        local = views[:, _rows(rank)]
        assert torch.allclose(pred, lightly.lejepa_invariance_loss(all_proj=local, global_proj=local[:1]), rtol=1e-12)
        assert torch.allclose(scale, lightly.visreg_scale_loss(views), rtol=1e-12)
        assert torch.allclose(center, lightly.visreg_center_loss(views), rtol=1e-12)
        torch.manual_seed(200 + rank)  # each rank's own slices
        assert torch.allclose(shape, lightly.visreg_shape_loss(views, K), rtol=1e-12)
        assert torch.allclose(total, 0.1 * pred + 0.9 * (scale + shape + center), rtol=1e-12)


@pytest.mark.parametrize("key", ["sliced_wasserstein", "sliced_wasserstein_cpu"])
def test_gather_with_unequal_batches_matches_one_process(unequal_ranks, key):
    x, a = _unequal_inputs()
    if key == "sliced_wasserstein_cpu":
        x, a = x.float(), a.float()
    value, grad = _grad(lambda v: fs.sliced_wasserstein(v, directions=a), x)
    tol = dict(rtol=1e-12, atol=1e-15) if x.dtype == torch.float64 else dict(rtol=1e-5, atol=1e-7)
    for rank, res in enumerate(unequal_ranks):
        assert torch.allclose(res[key][0], value.to(res[key][0].dtype), **tol)
        assert torch.allclose(res[key][1], len(UNEQUAL_N) * grad[_rows(rank)], **tol)


def test_single_process_runs_no_collective(unequal_ranks):
    x, a = _unequal_inputs()
    xl = x[_rows(0)]
    assert torch.allclose(unequal_ranks[0]["local"], fs.sigreg(xl, directions=a, reduction=None), rtol=1e-12)
    assert torch.allclose(unequal_ranks[0]["local_swd"], fs.sliced_wasserstein(xl, directions=a), rtol=1e-12)


def test_rank_local_directions_warn_once(unequal_ranks):
    for res in unequal_ranks:
        assert len(res["warnings"]) == 1


# (rank 0's call, rank 1's call): each pair disagrees on one thing a collective's layout follows
MISMATCHES = {
    "num_slices": (lambda x, a: fs.sigreg(x, directions=a), lambda x, a: fs.sigreg(x, directions=a[:, :5])),
    "n_points": (lambda x, a: fs.sigreg(x, directions=a), lambda x, a: fs.sigreg(x, directions=a, n_points=9)),
    "the input dtype": (lambda x, a: fs.sigreg(x, directions=a), lambda x, a: fs.sigreg(x.double(), directions=a)),
    "D": (lambda x, a: fs.sigreg(x, num_slices=K, step=1), lambda x, a: fs.sigreg(x[:, :-1], num_slices=K, step=1)),
    "the view count": (
        lambda x, a: fs.sigreg(x, directions=a),
        lambda x, a: fs.sigreg(torch.stack((x, x)), directions=a),
    ),
    "gather dtype": (
        lambda x, a: fs.sliced_wasserstein(x, directions=a, gather=True),
        lambda x, a: fs.sliced_wasserstein(x.double(), directions=a.double(), gather=True),
    ),
    "gather D": (
        lambda x, a: fs.sliced_wasserstein(x, directions=a, gather=True),
        lambda x, a: fs.sliced_wasserstein(x[:, :-1], directions=a[:-1], gather=True),
    ),
}


def _mismatch_worker(rank, init_file, out_dir):
    faulthandler.enable(all_threads=True)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, a, _ = _inputs()
        x, a = x[0, :N_LOCAL].float(), a.float()
        res = {}
        for name, calls in MISMATCHES.items():
            try:
                calls[rank](x, a)
                res[name] = "no error"
            except ValueError as e:
                res[name] = str(e)
        res["agreeing"] = fs.sigreg(x, directions=a)  # the group is still usable afterwards
        dist.barrier()
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
    _exit_cleanly()


def test_ranks_that_disagree_raise_naming_the_argument(tmp_path):
    """Ranks whose calls differ in what a collective's layout follows raise a ValueError on every rank,
    naming it with each rank's value, before the collective (which would abort inside gloo or average
    unrelated statistics)."""
    mp.spawn(_mismatch_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    expected = {
        "num_slices": "num_slices (rank 0: 9, rank 1: 5)",
        "n_points": "n_points (rank 0: 17, rank 1: 9)",
        "the input dtype": "the input dtype (rank 0: torch.float32, rank 1: torch.float64)",
        "D": "D (rank 0: 6, rank 1: 5)",
        "the view count": "the view count (rank 0: 1, rank 1: 2)",
        "gather dtype": "the input dtype (rank 0: torch.float32, rank 1: torch.float64); gather=True",
        "gather D": "D (rank 0: 6, rank 1: 5); gather=True",
    }
    for res in results:
        for name, text in expected.items():
            assert f"ranks disagree on {text}" in res[name], (name, res[name])
        assert torch.isfinite(res["agreeing"])
