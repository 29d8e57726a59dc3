"""`make served-runtime-bench`'s table and verdict, from a saved run: ONNX Runtime is adopted only
when it is ahead of torch in every round, at every body size, with the same answers."""

import copy

from benchmarks.served_runtimes import BODIES, markdown, verdict


def saved_run(onnx_faster_by: float = 1.2) -> dict:
    def points(p50_ms: float, requests_per_s: float) -> list[dict]:
        return [
            {"concurrency": 1, "p50_ms": p50_ms, "requests_per_s": 1000 / p50_ms, "errors": 0},
            {"concurrency": 16, "p50_ms": 10 * p50_ms, "requests_per_s": requests_per_s, "errors": 0},
        ]

    measured = {
        "torchscript": {str(size): [points(2.0, 500 / size), points(2.2, 450 / size)] for size in BODIES},
        "onnx": {
            str(size): [
                points(2.0 / onnx_faster_by, 500 * onnx_faster_by / size),
                points(2.2 / onnx_faster_by, 450 * onnx_faster_by / size),
            ]
            for size in BODIES
        },
    }
    facts = {
        "rounds": 2,
        "seconds": 8,
        "warmup": 15,
        "cpu": "a CPU",
        "cores": 2,
        "load": 1.0,
        "load_end": 1.0,
        "records": 100,
        "model_version": "1.0-x",
        "roc_auc": {"torchscript": 0.7, "onnx": 0.7},
        "max_abs_difference": 1e-7,
    }
    return {"facts": facts, "measured": measured}


def test_onnx_ahead_in_every_round_with_the_same_answers_wins():
    wins, _ = verdict(saved_run())
    assert wins
    table = markdown(saved_run())
    assert all(f"| {size:,} |" in table for size in BODIES)
    assert "`runtime: onnx` wins" in table


def test_one_round_behind_or_other_answers_is_no_win():
    behind = saved_run()
    behind["measured"]["onnx"]["1000"][1][1]["requests_per_s"] = 0.1
    assert verdict(behind) == (False, "not ahead in every round in records/s at 1,000 record(s)")
    other = copy.deepcopy(saved_run())
    other["facts"]["max_abs_difference"] = 1e-5
    assert not verdict(other)[0]
    assert "does not win" in markdown(saved_run(onnx_faster_by=0.9))
