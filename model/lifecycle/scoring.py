"""Score a CSV or Parquet file with the replay's production version (python run.py --mode
inference): every row gets an answer; rows with fields the model cannot use get them as
missing values, and the reason in the input_issues column."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from model.artifact.predict import load_served_model, predict_probability, probability_column
from model.artifact.tables import read_table, write_table
from model.config import Settings
from model.lifecycle.registry import replay_registry, version_export
from model.training.weights import CONFIG

log = logging.getLogger(__name__)


PREDICT, ISSUES = "predict", "input_issues"


def coerce_features(frame: pd.DataFrame, settings: Settings,
                    vocabularies: dict[str, set[str]]) -> tuple[pd.DataFrame, pd.Series]:
    """The feature columns as model.pt takes them, and per row a sentence for everything that was
    not a usable value: a missing column or cell, text in a number, a number outside its bounds
    (all three become missing values, which the model imputes), a category the model does not
    know (it has its own "unknown" embedding). Nothing here refuses a row."""
    features = pd.DataFrame(index=frame.index)
    issues: list[pd.Series] = []

    def note(mask: pd.Series, text: pd.Series | str) -> None:
        issues.append(pd.Series(np.where(mask, text, ""), index=frame.index, dtype=object))

    for name, feature in settings.features.categorical.items():
        if name not in frame.columns:
            log.warning("input has no column %s: missing in every row", name)
        values: pd.Series = frame.get(name, pd.Series(pd.NA, index=frame.index)).astype("string").str.strip()
        missing = values.isna() | (values == "")
        features[name] = values.mask(missing, "")
        note(missing & feature.required, f"{name}: missing")
        unseen = ~missing & ~values.isin(vocabularies.get(name, set())).fillna(False)
        note(unseen, name + ": unknown category '" + values.fillna("") + "'")
    for name, spec in settings.features.numeric.items():
        if name not in frame.columns:
            log.warning("input has no column %s: missing in every row", name)
        raw = frame.get(name, pd.Series(pd.NA, index=frame.index))
        text = raw.astype("string").str.strip()
        values = pd.to_numeric(text, errors="coerce").astype("float64")
        not_number = text.notna() & (text != "") & values.isna()
        infinite = values.notna() & ~np.isfinite(values)
        values = values.mask(infinite)
        outside = (values < spec.min) | (values > spec.max)
        features[name] = values.mask(outside)
        note(not_number | infinite, name + ": '" + text.fillna("") + "' is not a finite number")
        note(outside, name + ": " + values.astype(str) + f" outside [{spec.min:g}, {spec.max:g}]")
        note((text.isna() | (text == "")) & spec.required, f"{name}: missing")
    joined = pd.concat(issues, axis=1).apply(lambda row: "; ".join(part for part in row if part), axis=1) \
        if issues and len(frame) else pd.Series("", index=frame.index, dtype=object)
    return features, joined


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
        raise LookupError(f"the replay in {settings.stream.dir} has no production model yet: "
                          "run `python run.py --mode update` first")
    frame = read_table(path, as_text=True)
    config = json.loads((registry.weights_dir(production.version) / CONFIG).read_text())
    vocabularies = {name: set(vocabulary) for name, vocabulary in zip(config["categorical"], config["vocabularies"])}
    features, issues = coerce_features(frame, settings, vocabularies)
    model, schema = load_served_model(version_export(settings, registry, production.version))
    facts = schema["x-model"]
    probability = predict_probability(model, schema, features)
    scored = frame.assign(**{probability_column(schema): probability,
                             PREDICT: (probability >= facts["threshold"]).astype("int8"),
                             "model_version": production.torchserve_version, ISSUES: issues.to_numpy()})
    flagged = int((issues != "").sum())
    if flagged:
        log.warning("%d of %d rows had values that could not be used as given (see the %s column)", flagged,
                    len(frame), ISSUES)
    target = output or output_path(path)
    write_table(scored, target)
    log.info("scored %d rows with %s version %d into %s", len(scored), registry.name, production.version, target)
    return target
