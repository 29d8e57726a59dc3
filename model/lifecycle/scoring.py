"""Score a CSV or Parquet file with the replay's production version (python run.py --mode
inference): every row gets an answer; rows with fields the model cannot use get them as
missing values, and the reason in the input_issues column. This finds the version in the
registry; reading, checking, scoring and writing are the offline scorer's (score_table)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from model.artifact.predict import InputChecks, load_served_model, score_table
from model.config import Settings
from model.lifecycle.registry import replay_registry, version_export
from model.training.weights import CONFIG

log = logging.getLogger(__name__)


def output_path(path: Path) -> Path:
    suffix = ".parquet" if path.suffix == ".parquet" else ".csv"
    return path.with_name(f"{path.stem}.predictions{suffix}")


def score_file(settings: Settings, path: Path, output: Path | None = None) -> Path:
    """Score a file of request fields with the production version of the replay.

    Writes the input's columns as they came, then <target>_probability (the model's
    probability), `predict` (the 0/1 decision at the version's threshold, 1 = <target>),
    model_version, and input_issues (what was coerced in that row, "" when nothing). Every row
    gets a prediction: missing columns and cells, text in numbers, numbers outside their bounds
    and unknown categories are all treated as missing or unknown (coerce_features). The output
    goes beside the input as <name>.predictions.csv (or .parquet) unless `output` is given.
    """
    registry = replay_registry(settings)
    production = registry.production()
    if production is None:
        raise LookupError(
            f"the replay in {settings.stream.dir} has no production model yet: run `python run.py --mode update` first"
        )
    config = json.loads((registry.weights_dir(production.version) / CONFIG).read_text())
    vocabularies = {name: set(vocabulary) for name, vocabulary in zip(config["categorical"], config["vocabularies"])}
    model, schema = load_served_model(version_export(settings, registry, production.version))
    target = output or output_path(path)
    scored = score_table(
        model,
        schema,
        path,
        target,
        InputChecks(settings.features, vocabularies),
        model_version=production.torchserve_version,
    )
    log.info("scored %d rows with %s version %d into %s", len(scored), registry.name, production.version, target)
    return target
