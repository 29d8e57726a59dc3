"""The capacity tools on the slice model, with tiny durations (their numbers only for shape):
the request profile (JFR on the frontend, py-spy on the workers) and the serving experiments
(variants of the tuned settings, alternating rounds, medians and spreads)."""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import urllib.request

import pytest
import yaml

from benchmarks.experiment import measure, summarize
from benchmarks.profile import profile
from benchmarks.variants import BASELINE, parse_variant, variant_config, variant_server
from benchmarks.wrk import write_script
from loadtest.payloads import real_records
from tests.waiting import counted, wait_for


@pytest.fixture(scope="module")
def bodies(settings, table):
    return [json.dumps(record) for record in real_records(table, settings.features, count=32, seed=settings.seed)]


def inference_requests(endpoint) -> float:
    """TorchServe's own count of the inference requests it has received (it counts one as it arrives)."""
    return counted(f"http://127.0.0.1:{endpoint.ports[2]}", "ts_inference_requests_total")


def test_the_profile_samples_the_frontend_and_the_workers(settings, archive, plugins, bodies, tmp_path, monkeypatch):
    # TorchServe's count of inference requests before each wrk run of the profile and as the server stops,
    # and each run's time by the test's clock
    profiling, counts, loads, walls, endpoints = inspect.getmodule(profile), [], [], [], []
    started, run_wrk = profiling.variant_server, profiling.run_wrk

    @contextlib.contextmanager
    def counted_server(*args, **kwargs):
        with started(*args, **kwargs) as endpoint:
            endpoints.append(endpoint)
            yield endpoint
            counts.append(inference_requests(endpoint))

    def counted_wrk(*args, **kwargs):
        counts.append(inference_requests(endpoints[-1]))
        began = time.monotonic()
        loads.append(run_wrk(*args, **kwargs))
        walls.append(time.monotonic() - began)
        return loads[-1]

    monkeypatch.setattr(profiling, "variant_server", counted_server)
    monkeypatch.setattr(profiling, "run_wrk", counted_wrk)
    variant = parse_variant("profiled", ["minWorkers=1", "maxWorkers=1"])
    connections, seconds = 1, 3
    result = profile(
        settings.paths.model_dir,
        "mymodel",
        variant,
        bodies,
        connections=connections,
        seconds=seconds,
        warmup=2,
        workdir=tmp_path,
        plugins=plugins,
    )
    assert result["settings"]["workers"] == 1
    assert result["cpu_us_per_request"]["workers"] > 0
    # The rates against what the server itself counted over the same runs (the warm-up, the measured
    # run, the sampled one) and the test's clock: a run's count is TorchServe's from its start to the
    # next one's start (or the server's stop), when what wrk sent last has long arrived (the profile
    # waits 0.5 s or more). TorchServe counts a request as it arrives, wrk an answer it read within its
    # window: they differ by the requests in flight when wrk stopped, at most one per connection. wrk's
    # window is at least `seconds` (3.05 s of 3 here) and within the run's time by the test's clock
    # (3.06 s: it adds wrk's start and exit). So a rate lies between the count less the connections
    # over the run's time and the count over `seconds`: a bracket of about 2 %, where the warm-up's
    # rate (16 connections) or the sampled run's (py-spy slows the workers) are several times apart.
    assert len(loads) == 3 and len(counts) == 4, (loads, counts)
    served = [after - before for before, after in zip(counts, counts[1:])]
    for figure, count, wall in (
        (result["requests_per_s"], served[1], walls[1]),
        (result["sampled_requests_per_s"], served[2], walls[2]),
    ):
        assert count > 0 and (count - connections) / wall <= figure <= count / seconds, (figure, count, wall)
    frontend, workers = result["frontend"], result["workers"]
    assert frontend["samples"] > 0 and frontend["self"] and frontend["packages"]
    assert all("/" not in row["name"] for row in frontend["packages"])  # java.util.regex, not java/util/regex
    assert workers["samples"] > 0 and any("handle" in row["name"] for row in workers["inclusive"])
    assert sum(row["share"] for row in frontend["packages"]) > 0.5  # the top packages hold most samples
    # every thread's CPU, the kernel's part included: the frontend's event loop and the worker's main thread
    threads = result["threads"]
    assert any(row["thread"].startswith("epollEventLoop") for row in threads["frontend"])
    assert threads["workers"] and all(
        row["user_us"] >= 0 and row["system_us"] >= 0 for rows in threads.values() for row in rows
    )


def test_a_variant_changes_the_archives_settings_and_the_environment():
    variant = parse_variant("v", ["maxBatchDelay=5", "handler.torch_threads=2", "env.TS_ADAPTIVE_BATCHING=true"])
    assert variant == {
        "name": "v",
        "model_config": {"maxBatchDelay": 5, "handler": {"torch_threads": 2}},
        "env": {"TS_ADAPTIVE_BATCHING": "true"},
    }
    config = yaml.safe_load(variant_config(variant["model_config"]))
    assert config["maxBatchDelay"] == 5 and config["handler"]["torch_threads"] == 2
    assert config["handler"]["explain_steps"] == 64 and config["batchSize"] == 32  # the rest as the project sets it


def test_an_experiment_measures_each_variant_and_reads_it_against_the_baseline(
    settings, metrics, plugins, bodies, tmp_path
):
    script = write_script(bodies, tmp_path / "records.lua")
    variants = [{"name": BASELINE, "model_config": {}, "env": {}}, parse_variant("batch4", ["batchSize=4"])]
    rounds = {
        variant["name"]: [
            measure(
                settings.paths.model_dir, "mymodel", variant, script, [2], 1, 1, tmp_path / variant["name"], plugins
            )
        ]
        for variant in variants
    }
    # The settings in force as each server is ready, before any traffic: adaptive batching has had the
    # workers' start (seconds) to see an empty queue for 100 ms, so an idle model's batch size is 1 and
    # its delay 0, whatever the configured ones (a batch size of 4 or 32).
    for name in (BASELINE, "batch4"):
        assert {key: rounds[name][0][0]["settings"][key] for key in ("batchSize", "maxBatchDelay")} == {
            "batchSize": 1,
            "maxBatchDelay": 0,
        }, name
    rows = summarize(rounds, [2])
    assert [row["configuration"] for row in rows] == [BASELINE, "batch4"]
    assert rows[0]["requests_per_s_vs_baseline"] == 1 and rows[1]["requests_per_s"] > 0
    assert all(row["errors"] == 0 for row in rows)


def test_without_the_handlers_metrics_torchserves_own_remain(settings, metrics, plugins, bodies, tmp_path):
    """handler.metrics=false, the variant that measures what the handler's metric lines cost."""
    # the handler's request log on: its line for a request follows that request's metric lines
    variant = parse_variant("no-handler-metrics", ["handler.metrics=false", "env.ACCESS_LOG_LEVEL=info"])
    with variant_server(settings.paths.model_dir, tmp_path, "mymodel", variant, plugins) as endpoint:
        for body in bodies[:5]:
            request = urllib.request.Request(
                endpoint.url, data=body.encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as reply:
                assert "late_probability" in json.load(reply)
                last = reply.headers["X-Request-ID"]
        # The worker writes a batch's metric lines, then its request lines, to its output, which one
        # frontend thread reads in order: once the last request's line is in the server's log, any
        # metric line of these requests has been read.
        wait_for(
            lambda: f"request_id={last} " in (tmp_path / "torchserve.log").read_text(),
            30,
            f"the request log line of {last}",
        )
        metrics_port = endpoint.ports[2]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
            scraped = reply.read().decode()
        received = inference_requests(endpoint)
    assert received == 5  # TorchServe's own count: the five requests
    assert "model_predictions_total{" not in scraped and "model_probability_records_total{" not in scraped
