"""`python -m fused_sigreg headline`: the head to head a GPU machine prints first, run here at a tiny
stand-in point (the CUDA-only measurements — do_bench, the profiler, sync debug mode — need a GPU)."""

import torch

from fused_sigreg.tools import headline as H


def test_every_way_is_judged_timed_and_counted():
    point = H.Point("tiny", 2, 12, 6, 8, torch.bfloat16)
    rows = H.headline(torch.device("cpu"), repeats=1, points=[point])
    assert [r["way"] for r in rows] == list(H.providers())
    by_way = {r["way"]: r for r in rows}
    # memory="min" is the CUDA kernel: not available on a CPU, and that is not a failure
    assert by_way["fully fused (memory='min')"]["status"] == "not available"
    for way in ("fused_sigreg in a CUDA graph", "torch.compile(reference, mode='reduce-overhead')"):
        assert by_way[way]["status"] == "not available" and "CUDA graphs" in by_way[way]["why"]
    for way in ("fused_sigreg", "eager reference", "torch.compile(reference)", "torch.compile(fs.sigreg)"):
        row = by_way[way]
        assert row["status"] in ("ok", "over budget (peer)"), row
        assert isinstance(row["ms"], float) and row["ms"] > 0
        assert row["gpu_busy_ms"] == "n/a" and row["kernels"] > 0
    # the functional path with directions= reads nothing on the host
    assert by_way["fused_sigreg"]["syncs"] == 0
    assert by_way["fused_sigreg"]["status"] == "ok" and H.verdict(rows).startswith("headline: ok")


def test_the_verdict_fails_on_our_error_or_a_failed_cell_only():
    ok = {"point": "p", "way": "fused_sigreg", "status": "ok", "ms": 1.0, "kernels": 3}
    peer = {"point": "p", "way": "torch.compile(reference)", "status": "over budget (peer)", "ms": 1.0}
    assert H.verdict([ok, peer]).startswith("headline: ok")
    assert "over budget: fused_sigreg at p" in H.verdict([dict(ok, status="OVER BUDGET")])
    assert "failed: RuntimeError" in H.verdict([dict(ok, ms="failed: RuntimeError: boom")])
    crashed = dict(ok, status="failed", why="failed: ValueError: x")
    assert H.verdict([crashed]).startswith("headline: FAILED")
    assert H.reasons([crashed]) == ["fused_sigreg: failed: ValueError: x"]
