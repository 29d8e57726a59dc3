"""Request payloads for the load tests: real, anomalous and adversarial flight records.

    python -m loadtest.payloads --config params.yaml --out-dir reports/loadtest/payloads [--records 1000]

They are written as JSON files (records.json, anomalous.json, adversarial.json) because
the Locust process must never import torch (Locust patches the interpreter with gevent);
this module needs torch only for the adversarial records and runs beforehand. Every case
carries the status the server owes it, so the load test can count a wrong answer as an
error and not only a 5xx.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from handler.service import PredictionService
from model import configure_logging
from model.artifact.export import SCHEMA, input_schema
from model.artifact.predict import load_served_model
from model.config import DEFAULT_CONFIG, Features, Settings, load_settings
from model.data.prepare import load_table
from model.data.request_records import request_records
from model.data.split import split_rows
from model.training.weights import CONFIG

log = logging.getLogger(__name__)

RECORDS_FILE = "records.json"
ANOMALOUS_FILE = "anomalous.json"
ADVERSARIAL_FILE = "adversarial.json"
EPSILON = 0.1  # FGSM step, in training standard deviations of each number
NOISE = 0.5  # noise of the "noisy" anomaly, in training standard deviations
UNSEEN = "UNSEEN-{}"  # a category no vocabulary holds


def real_records(table: pd.DataFrame, features: Features, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` flights of the test months (all of them if fewer), as clients would send them."""
    test = split_rows(table, "test")
    return request_records(test.sample(min(count, len(test)), random_state=seed), features)


def training_spread(model_dir: Path) -> dict[str, float]:
    """Each number's standard deviation on the training months, as the served model scales it."""
    config = json.loads((Path(model_dir) / CONFIG).read_text())
    return dict(zip(config["numeric"], config["numeric_std"]))


class FieldBounds:
    """The request contract of each field, read from the exported schema.json."""

    def __init__(self, schema: dict[str, Any]):
        facts = schema["x-model"]
        self.categorical: list[str] = facts["categorical"]
        self.numeric: list[str] = facts["numeric"]
        self.required = set(schema["required"])
        fields = schema["properties"]
        self.low = {name: fields[name]["minimum"] for name in self.numeric}
        self.high = {name: fields[name]["maximum"] for name in self.numeric}
        self.integer = {name: "integer" in fields[name]["type"] for name in self.numeric}

    def within(self, name: str, value: float) -> float | int:
        """`value` clipped to the field's bounds, an int for integer fields, so the record stays valid."""
        if self.integer[name]:
            return int(min(max(round(value), math.ceil(self.low[name])), math.floor(self.high[name])))
        return round(min(max(value, self.low[name]), self.high[name]), 4)

    def outside(self, name: str, spread: float, above: bool) -> float | int:
        """A value beyond the field's bounds by one standard deviation (at least 1)."""
        step = max(spread, 1.0)
        value = self.high[name] + step if above else self.low[name] - step
        return int(math.ceil(value) if above else math.floor(value)) if self.integer[name] else round(value, 4)


def anomalous_cases(
    records: list[dict[str, Any]], schema: dict[str, Any], spread: dict[str, float], seed: int, noise: float = NOISE
) -> list[dict[str, Any]]:
    """Five variants of every record, each tagged with the status the server must answer:
    noisy numbers within bounds (200), one number out of range (400), an unknown category (200),
    optional fields missing or null (200), a required field missing (400)."""
    rng = random.Random(seed)
    bounds = FieldBounds(schema)
    optional = [name for name in bounds.categorical + bounds.numeric if name not in bounds.required]
    cases = []
    for index, record in enumerate(records):
        noisy = {
            **record,
            **{
                name: bounds.within(name, record[name] + rng.gauss(0, noise * spread[name]))
                for name in bounds.numeric
                if record.get(name) is not None
            },
        }
        cases.append(_case("noisy", None, 200, noisy))

        name = rng.choice(bounds.numeric)
        cases.append(
            _case(
                "out_of_range",
                name,
                400,
                {**record, name: bounds.outside(name, spread[name], above=rng.random() < 0.5)},
            )
        )

        name = rng.choice(bounds.categorical)
        cases.append(_case("unknown_category", name, 200, {**record, name: UNSEEN.format(index)}))

        name = rng.choice(optional)
        kept = {key: value for key, value in record.items() if key in bounds.required}
        cases.append(_case("missing_optional", name, 200, {**kept, name: None}))

        name = rng.choice(sorted(bounds.required))
        cases.append(_case("missing_required", name, 400, {k: v for k, v in record.items() if k != name}))
    return cases


def _case(kind: str, field: str | None, status: int, record: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "field": field, "expected_status": status, "record": record}


def late_probabilities(
    model: torch.jit.ScriptModule, schema: dict[str, Any], records: list[dict[str, Any]], gradient: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, numeric input) for request records, encoded exactly as the handler encodes them;
    with gradient=True the numeric input requires grad."""
    service = PredictionService(schema, _no_predict)
    categorical, numeric = service.model_inputs(service.rows(records))
    values = torch.tensor(numeric, dtype=torch.float32).reshape(len(records), len(schema["x-model"]["numeric"]))
    values.requires_grad_(gradient)
    with torch.set_grad_enabled(gradient):
        probabilities = model(categorical, values)
    # detach: after a run with gradients, TorchScript's cached plan marks even no-grad outputs as requiring grad
    return (probabilities if gradient else probabilities.detach()), values


def _no_predict(categorical: list[list[str]], numeric: list[list[float]]) -> list[float]:
    raise RuntimeError("only the service's encoding is used here")


def adversarial_cases(
    model: torch.jit.ScriptModule,
    schema: dict[str, Any],
    records: list[dict[str, Any]],
    spread: dict[str, float],
    epsilon: float = EPSILON,
) -> list[dict[str, Any]]:
    """FGSM on the numbers: each present number steps by epsilon x its training std in the
    direction that raises the late probability. Integer fields are rounded (they move only
    when the step is at least half a unit) and everything is clipped to the schema's bounds,
    so each perturbed record is still a valid request. The offline probabilities before and
    after come along, to compare with what the server answers."""
    bounds = FieldBounds(schema)
    before, values = late_probabilities(model, schema, records, gradient=True)
    (gradient,) = torch.autograd.grad(before.sum(), values)
    direction = torch.sign(torch.nan_to_num(gradient)).tolist()
    perturbed = []
    for record, signs in zip(records, direction):
        changed = dict(record)
        for name, sign in zip(bounds.numeric, signs):
            if record.get(name) is not None and sign:
                changed[name] = bounds.within(name, record[name] + sign * epsilon * spread[name])
        perturbed.append(changed)
    after, _ = late_probabilities(model, schema, perturbed)
    return [
        {
            "kind": "fgsm",
            "epsilon": epsilon,
            "expected_status": 200,
            "record": changed,
            "original": record,
            "probability_before": float(p),
            "probability_after": float(q),
        }
        for record, changed, p, q in zip(records, perturbed, before.tolist(), after.tolist())
    ]


def probability_shift(cases: list[dict[str, Any]]) -> dict[str, float]:
    """How far the adversarial records move the offline probability."""
    shifts = [case["probability_after"] - case["probability_before"] for case in cases]
    return {
        "cases": len(shifts),
        "mean_shift": sum(shifts) / len(shifts),
        "max_shift": max(shifts),
        "share_raised": sum(shift > 0 for shift in shifts) / len(shifts),
    }


def contract_schema(settings: Settings) -> dict[str, Any]:
    """The request schema the params file's feature contract exports to (without vocabularies):
    what a server of this config's model checks, for testing one with no model at hand."""
    features = settings.features
    return input_schema(
        {
            "name": settings.model.name,
            "target": settings.data.target,
            "version": settings.model.version,
            "features": features.model_dump(),
            "serving": settings.serving.model_dump(),
            "categorical": list(features.categorical),
            "numeric": list(features.numeric),
            "vocabularies": [{} for _ in features.categorical],
        }
    )


def table_spread(table: pd.DataFrame, features: Features) -> dict[str, float]:
    """Each number's standard deviation on the training rows, as training would scale it."""
    train = split_rows(table, "train")
    return {
        name: float(train[name].astype("float64").std()) if train[name].notna().sum() > 1 else 1.0
        for name in features.numeric
    }


def write_payloads(
    settings: Settings,
    out_dir: Path,
    records: int = 1000,
    seed: int | None = None,
    epsilon: float = EPSILON,
    table: pd.DataFrame | None = None,
) -> Path:
    """Write records.json, anomalous.json and adversarial.json into out_dir and return it. Without
    a trained model (a running server tested by URL) the schema comes from the feature contract,
    the spreads from the training rows, and there are no adversarial records (FGSM needs the model)."""
    seed = settings.seed if seed is None else seed
    table = load_table(settings) if table is None else table
    real = real_records(table, settings.features, records, seed)
    if (settings.paths.export_dir / SCHEMA).exists():
        model, schema = load_served_model(settings.paths.export_dir)
        spread = training_spread(settings.paths.model_dir)
        adversarial = adversarial_cases(model, schema, real, spread, epsilon)
    else:
        log.info(
            "no model in %s: the schema from the feature contract, no adversarial records", settings.paths.export_dir
        )
        schema, spread, adversarial = contract_schema(settings), table_spread(table, settings.features), []
    anomalous = anomalous_cases(real, schema, spread, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, payload in ((RECORDS_FILE, real), (ANOMALOUS_FILE, anomalous), (ADVERSARIAL_FILE, adversarial)):
        (out_dir / name).write_text(json.dumps(payload) + "\n")
    if not adversarial:
        return out_dir
    shift = probability_shift(adversarial)
    log.info(
        "%d real records, %d anomalous cases, %d adversarial records in %s",
        len(real),
        len(anomalous),
        len(adversarial),
        out_dir,
    )
    log.info(
        "FGSM at epsilon %.3g raises the late probability of %.0f%% of records, by %.4f on average (at most %.4f)",
        epsilon,
        100 * shift["share_raised"],
        shift["mean_shift"],
        shift["max_shift"],
    )
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument("--out-dir", required=True, type=Path, help="folder for the three JSON files")
    parser.add_argument("--records", type=int, default=1000, help="test-month records to sample (default 1000)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: the params file's)")
    parser.add_argument("--epsilon", type=float, default=EPSILON, help="FGSM step in training stds")
    args = parser.parse_args()
    configure_logging()
    print(write_payloads(load_settings(args.config), args.out_dir, args.records, args.seed, args.epsilon))


if __name__ == "__main__":
    main()
