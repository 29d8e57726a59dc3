"""The handler's Prometheus metrics on a real TorchServe: after known traffic (good records whose
outcomes the answers tell, bad ones with known reasons) the metrics port serves exactly those
counts; every metric the Grafana dashboard (deploy/grafana/mymodel.json) queries is in a real
scrape, and a real Prometheus scraping the server answers every one of the dashboard's queries
with data and evaluates every alert rule of deploy/prometheus/alerts.yml."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest
import requests
import yaml

from harness.torchserve import torchserve
from model.config import ROOT
from model.data.request_records import request_records
from model.data.split import split_rows
from model.lifecycle.ports import free_ports
from tests.tools import monitoring_tool

JSON = {"Content-Type": "application/json"}
SAMPLE = json.loads((ROOT / "sample_input.json").read_text())
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "mymodel.json").read_text())
# Bad requests and the problem kinds the handler counts them under (handler/service.py).
BAD = [
    (json.dumps({**SAMPLE, "month": 13}), JSON, ["out_of_range"]),
    (
        json.dumps([SAMPLE, {**SAMPLE, "hour": 99}, {**SAMPLE, "distance": "far", "seats": -1}]),
        JSON,
        ["out_of_range", "wrong_type", "out_of_range"],
    ),
    (json.dumps({k: v for k, v in SAMPLE.items() if k != "carrier"}), JSON, ["missing_field"]),
    (json.dumps({**SAMPLE, "tail": "N12345"}), JSON, ["unknown_field"]),
    (json.dumps({**SAMPLE, "carrier": ""}), JSON, ["empty_value"]),
    ("{not json", JSON, ["body"]),
    (json.dumps(SAMPLE), {"Content-Type": "text/csv"}, ["media_type"]),
]


@dataclass(frozen=True)
class Traffic:
    probabilities: list[float]  # of every predicted record
    late: Counter  # predicted records by outcome ("true" / "false")
    refused: Counter  # refused records by reason
    inference_requests: int  # requests to /predictions and /explanations


@pytest.fixture(scope="module")
def metered(archive, tmp_path_factory):
    """A TorchServe of this module's own, so its counters hold this module's traffic only."""
    with torchserve(archive.parent, tmp_path_factory.mktemp("metered"), extra_env={"TS_OIP_ADDRESS": ""}) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(metered, tmp_path_factory):
    """A real Prometheus (Debian's package) scraping the module's TorchServe every second from
    before its traffic, with the project's alert rules loaded; its HTTP API's URL."""
    binary = monitoring_tool("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    shutil.copyfile(ROOT / "deploy" / "prometheus" / "alerts.yml", work / "alerts.yml")
    target = urlparse(metered.metrics_url).netloc
    (work / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": ["alerts.yml"],
                "scrape_configs": [{"job_name": "mymodel-serve", "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    with open(work / "prometheus.log", "wb") as log:
        server = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not scraped_up(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((work / "prometheus.log").read_text()[-3000:])
                time.sleep(0.5)
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


def scraped_up(url: str) -> bool:
    try:
        result = requests.get(f"{url}/api/v1/query", params={"query": "up"}, timeout=5).json()["data"]["result"]
    except (requests.ConnectionError, ValueError, KeyError):
        return False
    return bool(result) and result[0]["value"][1] == "1"


def promql(url: str, expression: str) -> list[dict]:
    reply = requests.get(f"{url}/api/v1/query", params={"query": expression}, timeout=30).json()
    assert reply["status"] == "success", (expression, reply)
    return reply["data"]["result"]


@pytest.fixture(scope="module")
def traffic(metered, prometheus, table, settings) -> Traffic:
    flights = request_records(split_rows(table, "test").sample(45, random_state=5), settings.features)
    url = f"{metered.inference_url}/predictions/mymodel"

    def send(body, headers=JSON):
        return requests.post(url, data=body, headers=headers, timeout=30)

    # 25 flights one by one and concurrently (TorchServe batches them), 20 in one request, the bad
    # requests among them; one explanation (explanations are not counted as predictions).
    singles = [(json.dumps(flight), JSON) for flight in flights[:25]] + [(body, headers) for body, headers, _ in BAD]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda request: send(*request), singles))
    replies.append(send(json.dumps(flights[25:])))
    explained = requests.post(
        f"{metered.inference_url}/explanations/mymodel", data=json.dumps(SAMPLE), headers=JSON, timeout=60
    )
    assert explained.status_code == 200, explained.text

    answers = []
    for reply in replies[:25] + replies[-1:]:
        assert reply.status_code == 200, reply.text
        answers += reply.json() if isinstance(reply.json(), list) else [reply.json()]
    assert len(answers) == len(flights)
    for reply in replies[25:-1]:
        assert 400 <= reply.status_code < 500, reply.text
    probabilities = [answer["late_probability"] for answer in answers]
    return Traffic(
        probabilities,
        Counter(str(answer["late"]).lower() for answer in answers),
        Counter(reason for _, _, reasons in BAD for reason in reasons),
        len(replies) + 1,
    )


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:\\.|[^"\\])*)"')


def scrape(server) -> dict[str, list[Sample]]:
    """Samples by name, as the metrics port writes them (the text exposition format read
    verbatim: prometheus_client's parser would rename counters to end in _total, which a
    Prometheus scraping this port does not)."""
    samples: dict[str, list[Sample]] = {}
    for line in requests.get(f"{server.metrics_url}/metrics", timeout=10).text.splitlines():
        match = SAMPLE_LINE.match(line)
        if match and not line.startswith("#"):
            name, labels, number = match.groups()
            samples.setdefault(name, []).append(Sample(name, dict(LABEL.findall(labels or "")), float(number)))
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def scraped(metered, traffic) -> dict[str, list]:
    """The scrape once the frontend has read every metric line the workers wrote (it reads them
    as they come; the wait covers a loaded machine)."""
    deadline = time.monotonic() + 60
    while True:
        samples = scrape(metered)
        done = value(samples, "model_probability_records_total") >= len(traffic.probabilities) and value(
            samples, "model_invalid_records_total"
        ) >= sum(traffic.refused.values())
        if done or time.monotonic() > deadline:
            return samples
        time.sleep(0.5)


def test_predictions_are_counted_by_outcome(scraped, traffic):
    assert traffic.late["true"] and traffic.late["false"], "the traffic should hold both outcomes"
    for outcome in ("true", "false"):
        counted = value(scraped, "model_predictions_total", ModelName="mymodel", target="late", predicted=outcome)
        assert counted == traffic.late[outcome]


def test_the_late_probability_bins_hold_every_prediction(scraped, traffic):
    bins = {
        s.labels["bin"]: s.value
        for s in scraped["model_probability_records_total"]
        if s.labels["ModelName"] == "mymodel" and s.labels["target"] == "late"
    }
    expected = Counter(f"{min(int(p * 20), 19) * 0.05:.2f}" for p in traffic.probabilities)
    assert bins == dict(expected)
    assert len(bins) > 1, "the traffic should fall in several bins"
    assert value(scraped, "model_probability_sum_total", ModelName="mymodel", target="late") == pytest.approx(
        sum(traffic.probabilities), rel=1e-9
    )


def test_refused_records_are_counted_by_reason(scraped, traffic):
    counted = {s.labels["reason"]: s.value for s in scraped["model_invalid_records_total"]}
    assert counted == dict(traffic.refused)


def test_handler_times_are_observed_per_batch(scraped, traffic):
    batches = value(scraped, "model_preprocess_milliseconds_count")
    assert 1 <= batches <= traffic.inference_requests
    assert 1 <= value(scraped, "model_inference_milliseconds_count") <= batches
    assert value(scraped, "model_preprocess_milliseconds_sum") > 0
    assert value(scraped, "model_inference_milliseconds_sum") > 0


def test_torchserve_counts_the_same_requests(scraped, traffic):
    assert value(scraped, "ts_inference_requests_total", model_name="mymodel") == traffic.inference_requests


@pytest.fixture
def served_handler():
    """handler/handler.py, and TorchServe's metrics cache read from handler/metrics.yaml."""
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    from handler import handler

    cache = MetricsCacheYamlImpl(str(ROOT / "handler" / "metrics.yaml"))
    cache.initialize_cache()
    return handler, cache


def test_metric_lines_are_torchserves_own(served_handler, caplog):
    """The handler writes a batch's observations in one log record, in the line format TorchServe's
    CachingMetric writes one at a time (and its frontend parses)."""
    from ts.metrics.metric_type_enum import MetricTypes

    handler, cache = served_handler
    metric = cache.get_metric(handler.PREDICTIONS, MetricTypes.COUNTER)
    with caplog.at_level(logging.INFO):
        metric.add_or_update(3, ["mymodel", "late", "true"])
    stamp = caplog.records[-1].getMessage().rsplit("|#hostname:", 1)[1]
    assert handler.metric_format(metric, ("mymodel", "late", "true")) % (3, stamp) == caplog.records[-1].getMessage()


# TorchServe's frontend reads a metric line with this pattern (org.pytorch.serve.metrics.Metric).
FRONTEND_METRIC_LINE = re.compile(
    r"\s*([\w\s]+)\.([\w\s]+):([0-9\-,.e]+)\|#([^|]*)(\|#type:([^|,]+))?"
    r"\|#hostname:([^,]+),([^,]+)(,(.*))?"
)


def test_a_batch_writes_a_line_per_probability_bin_not_per_record(served_handler, caplog):
    """A batch of 1,000 predicted records writes a few dozen metric lines at most, each one the
    frontend can read, and their counts add up to the batch."""
    from handler.service import Batch, Reply

    handler, cache = served_handler
    served = handler.PredictionHandler()
    served.service = type("Service", (), {"name": "mymodel", "target": "late", "threshold": 0.5})()
    served.metrics = handler.declared_metrics(cache)
    probabilities = [index / 999 for index in range(1000)]
    batch = Batch(
        [
            Reply(200, "[]", tuple(probabilities[:400])),
            Reply(200, "[]", tuple(probabilities[400:])),
            Reply(400, "{}", refused=("out_of_range",)),
        ],
        0.004,
        0.002,
    )
    with caplog.at_level(logging.INFO, logger="ts.metrics.handler"):
        served.record(batch)
    lines = [record.getMessage() for record in caplog.records if record.name == "ts.metrics.handler"][-1].split("\n")
    assert all(FRONTEND_METRIC_LINE.fullmatch(line.removeprefix("[METRICS]")) for line in lines), lines
    # predictions true and false, 20 bins, the sum, one refusal, preprocess and inference times
    assert len(lines) == 2 + 20 + 1 + 1 + 2
    observed = Counter()
    for line in lines:
        name, rest = line.removeprefix("[METRICS]").split(":", 1)
        observed[name.rsplit(".", 1)[0]] += float(rest.split("|", 1)[0])
    assert observed[handler.PREDICTIONS] == observed[handler.PROBABILITY_RECORDS] == 1000
    assert observed[handler.PROBABILITY_SUM] == pytest.approx(sum(probabilities))
    assert observed[handler.INVALID_RECORDS] == 1


def promql_metric_names(expression: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, label
    names or values, durations or Grafana variables."""
    expression = re.sub(r'"(?:\\.|[^"\\])*"', "", expression)  # label values
    expression = re.sub(r"\$\{?\w+\}?", "", expression)  # Grafana variables
    expression = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expression)  # label matchers, ranges
    expression = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expression)
    identifiers = re.findall(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", expression)
    keywords = {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    }
    return set(identifiers) - keywords


def dashboard_queries() -> list[str]:
    expressions = [target["expr"] for panel in DASHBOARD["panels"] for target in panel.get("targets", [])]
    expressions += [
        re.sub(r"label_values\((\w+),.*\)", r"\1", variable["query"]["query"])
        for variable in DASHBOARD["templating"]["list"]
        if variable["type"] == "query"
    ]
    return expressions


def test_the_promql_reader_finds_metric_names():
    assert promql_metric_names(
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{m="$model"}[$__rate_interval])))'
        " / sum(rate(b_total[5m])) * on (x) group_left c"
    ) == {"a_bucket", "b_total", "c"}


def test_every_metric_the_dashboard_queries_is_in_a_real_scrape(metered, scraped):
    served_503(metered)
    names = set().union(*(promql_metric_names(expression) for expression in dashboard_queries()))
    assert {
        "model_predictions_total",
        "model_probability_records_total",
        "model_invalid_records_total",
        "ts_inference_requests_total",
    } <= names
    deadline = time.monotonic() + 90  # host metrics (CPUUtilization, ...) come once a minute
    while missing := names - set(scrape(metered)):
        assert time.monotonic() < deadline, f"queried by the dashboard but not served: {sorted(missing)}"
        time.sleep(2)


EXTRA = 10  # predictions the Prometheus test sends itself


def test_every_dashboard_query_returns_data_from_a_real_prometheus(metered, prometheus, traffic):
    """Each expression of the dashboard as Grafana sends it ($model and $__rate_interval filled
    in), through Prometheus's HTTP API: at least one series, and numbers, not only NaN."""
    served_503(metered)
    # Traffic spread over several scrapes: a rate needs a series seen before and after a change
    # (the module's first traffic may all land between two scrapes, as the series appear).
    for _ in range(EXTRA):
        reply = requests.post(
            f"{metered.inference_url}/predictions/mymodel", data=json.dumps(SAMPLE), headers=JSON, timeout=30
        )
        assert reply.status_code == 200, reply.text
        time.sleep(0.4)
    window = "5m"  # longer than this module's life: every rate sees all of its traffic
    queries = [
        expression.replace("$model", "mymodel").replace("$__rate_interval", window)
        for expression in dashboard_queries()
    ]
    deadline = time.monotonic() + 120  # host metrics (CPUUtilization, ...) come once a minute
    while empty := [
        query
        for query in queries
        if not [row for row in promql(prometheus, query) if row["value"][1] not in ("NaN", "+Inf")]
    ]:
        assert time.monotonic() < deadline, f"no data from Prometheus for: {empty}"
        time.sleep(2)
    # what Prometheus holds is what the traffic was
    expected, deadline = len(traffic.probabilities) + EXTRA, time.monotonic() + 30
    while (
        counted := float(promql(prometheus, 'sum(model_predictions_total{ModelName="mymodel"})')[0]["value"][1])
    ) < expected and time.monotonic() < deadline:
        time.sleep(1)  # the last answers' metric lines reach the metrics port, then a scrape
    assert counted == expected


def test_prometheus_evaluates_every_alert_rule_on_the_real_series(prometheus, traffic):
    groups = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    assert set(rules) == {rule["alert"] for rule in alerts}
    deadline = time.monotonic() + 30
    while not all(rule.get("lastEvaluation", "").startswith("2") for rule in rules.values()):
        assert time.monotonic() < deadline, rules
        time.sleep(1)
        groups = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert {name: rule["health"] for name, rule in rules.items()} == dict.fromkeys(rules, "ok")
    # healthy traffic: none of the service's own alerts fire (NoReadyWorker needs kube-state-metrics)
    firing = {rule["name"] for rule in rules.values() if rule["state"] == "firing"}
    assert firing <= {"MymodelNoReadyWorker"}


def served_503(metered) -> None:
    """One 5xx for the dashboard's 5xx series: with no worker, TorchServe answers 503."""
    url = f"{metered.management_url}/models/mymodel"
    workers = len(requests.get(url, timeout=10).json()[0]["workers"])
    requests.put(url, params={"min_worker": 0, "max_worker": 0, "synchronous": "true"}, timeout=120)
    try:
        refused = requests.post(
            f"{metered.inference_url}/predictions/mymodel", data=json.dumps(SAMPLE), headers=JSON, timeout=30
        )
        assert refused.status_code == 503
    finally:
        requests.put(url, params={"min_worker": workers, "max_worker": workers, "synchronous": "true"}, timeout=120)


def test_the_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable():
    assert DASHBOARD["uid"] and DASHBOARD["title"] and DASHBOARD["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        assert all(target["expr"] for target in panel["targets"]), panel["title"]
