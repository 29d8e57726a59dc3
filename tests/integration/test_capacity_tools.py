"""The capacity tools on the slice model, with tiny durations (their numbers only for shape):
the request profile (JFR on the frontend, py-spy on the workers) and the serving experiments
(variants of the tuned settings, alternating rounds, medians and spreads)."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def bodies(settings, table):
    return [json.dumps(record) for record in real_records(table, settings.features, count=32, seed=settings.seed)]


def test_the_profile_samples_the_frontend_and_the_workers(settings, archive, plugins, bodies, tmp_path):
    variant = parse_variant("profiled", ["minWorkers=1", "maxWorkers=1"])
    result = profile(settings.paths.model_dir, "mymodel", variant, bodies, connections=1, seconds=3, warmup=2,
                     workdir=tmp_path, plugins=plugins)
    assert result["settings"]["workers"] == 1
    assert result["requests_per_s"] > 0 and result["cpu_us_per_request"]["workers"] > 0
    frontend, workers = result["frontend"], result["workers"]
    assert frontend["samples"] > 0 and frontend["self"] and frontend["packages"]
    assert all("/" not in row["name"] for row in frontend["packages"])  # java.util.regex, not java/util/regex
    assert workers["samples"] > 0 and any("handle" in row["name"] for row in workers["inclusive"])
    assert sum(row["share"] for row in frontend["packages"]) > 0.5  # the top packages hold most samples
    # every thread's CPU, the kernel's part included: the frontend's event loop and the worker's main thread
    threads = result["threads"]
    assert any(row["thread"].startswith("epollEventLoop") for row in threads["frontend"])
    assert threads["workers"] and all(row["user_us"] >= 0 and row["system_us"] >= 0
                                      for rows in threads.values() for row in rows)


def test_a_variant_changes_the_archives_settings_and_the_environment():
    variant = parse_variant("v", ["maxBatchDelay=5", "handler.torch_threads=2", "env.TS_ADAPTIVE_BATCHING=true"])
    assert variant == {"name": "v", "model_config": {"maxBatchDelay": 5, "handler": {"torch_threads": 2}},
                       "env": {"TS_ADAPTIVE_BATCHING": "true"}}
    config = yaml.safe_load(variant_config(variant["model_config"]))
    assert config["maxBatchDelay"] == 5 and config["handler"]["torch_threads"] == 2
    assert config["handler"]["explain_steps"] == 64 and config["batchSize"] == 32  # the rest as the project sets it


def test_an_experiment_measures_each_variant_and_reads_it_against_the_baseline(settings, metrics, plugins, bodies,
                                                                             tmp_path):
    script = write_script(bodies, tmp_path / "records.lua")
    variants = [{"name": BASELINE, "model_config": {}, "env": {}}, parse_variant("batch4", ["batchSize=4"])]
    rounds = {variant["name"]: [measure(settings.paths.model_dir, "mymodel", variant, script, [2], 1, 1,
                                        tmp_path / variant["name"], plugins)] for variant in variants}
    # the batch size in force (adaptive batching: a worker's share of the queue, up to the configured one)
    assert 1 <= rounds["batch4"][0][0]["settings"]["batchSize"] <= 4
    assert 1 <= rounds[BASELINE][0][0]["settings"]["batchSize"] <= 32
    rows = summarize(rounds, [2])
    assert [row["configuration"] for row in rows] == [BASELINE, "batch4"]
    assert rows[0]["requests_per_s_vs_baseline"] == 1 and rows[1]["requests_per_s"] > 0
    assert all(row["errors"] == 0 for row in rows)


def test_without_the_handlers_metrics_torchserves_own_remain(settings, metrics, plugins, bodies, tmp_path):
    """handler.metrics=false, the variant that measures what the handler's metric lines cost."""
    variant = parse_variant("no-handler-metrics", ["handler.metrics=false"])
    with variant_server(settings.paths.model_dir, tmp_path, "mymodel", variant, plugins) as endpoint:
        for body in bodies[:5]:
            request = urllib.request.Request(endpoint.url, data=body.encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as reply:
                assert "late_probability" in json.load(reply)
        time.sleep(2)  # metric lines reach the frontend within milliseconds; none should come
        metrics_port = endpoint.ports[2]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
            scraped = reply.read().decode()
    assert "ts_inference_requests_total" in scraped
    assert "model_predictions_total{" not in scraped and "model_probability_records_total{" not in scraped
