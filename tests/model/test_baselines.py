"""Baselines on the slice: every model scores, validation over time never looks ahead, and each
preprocessing variant of the MLP exports a working model.pt of its own."""

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from model.analysis.baselines import (
    MLP,
    RESULTS,
    TABLE,
    VARIANTS,
    baseline_models,
    build_section,
    fit_baseline,
    run,
    time_folds,
)
from model.artifact.predict import load_served_model, predict_frame
from model.data.sources import TIME
from model.data.split import split_rows


@pytest.fixture(scope="module")
def cheap(settings):
    # The CLI's code paths at a fraction of its cost: kNN remembers few rows, two folds,
    # and the MLP trains a single epoch per fold and per variant.
    return settings.with_overrides(
        {"evaluation": {"knn_max_train_rows": 2000, "cv_folds": 2}, "train": {"max_epochs": 1}}
    )


@pytest.fixture(scope="module")
def comparison(cheap, table, metrics, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("baselines")
    return run(cheap, table, out_dir), out_dir


def test_every_model_gets_finite_metrics_and_timings(settings, comparison):
    result, _ = comparison
    assert set(result["models"]) == {MLP, *baseline_models(settings)}
    for name, scores in result["models"].items():
        for split in ("valid", "test"):
            assert all(math.isfinite(value) for value in scores[split].values()), (name, split)
            assert 0.5 < scores[split]["roc_auc"] < 1, (name, split)
        assert scores["fit_seconds"] > 0 and scores["predict_ms_per_1000_rows"] > 0, name


def test_served_mlp_is_scored_through_model_pt(comparison, metrics):
    result, _ = comparison
    assert result["models"][MLP]["model_version"] == metrics["model_version"]
    assert result["models"][MLP]["test"]["roc_auc"] == pytest.approx(metrics["test"]["roc_auc"], abs=1e-4)


def test_gradient_boosting_beats_chance_clearly(comparison):
    test = comparison[0]["models"]["gradient_boosting"]["test"]
    assert test["roc_auc"] >= 0.62
    assert test["pr_auc"] >= test["positive_rate"] + 0.05


def test_time_folds_train_only_on_earlier_flights_whatever_the_row_order(table):
    development = split_rows(table, "train", "valid").sample(frac=1, random_state=0)  # rows out of time order
    times = development[TIME].reset_index(drop=True)
    folds = time_folds(times, 4)
    assert len(folds) == 4
    for fit_at, score_at in folds:
        assert not set(fit_at) & set(score_at)
        assert times[fit_at].max() <= times[score_at].min()
    starts = [times[score_at].min() for _, score_at in folds]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_cross_validation_gives_one_score_per_fold_in_time_order(cheap, comparison):
    cv = comparison[0]["cross_validation"]
    folds = cv["folds"]
    assert len(folds) == cheap.evaluation.cv_folds
    for fold in folds:
        assert fold["train_end"] <= fold["valid_start"] <= fold["valid_end"]
    assert [f["valid_start"] for f in folds] == sorted(f["valid_start"] for f in folds)
    assert [f["train_rows"] for f in folds] == sorted(f["train_rows"] for f in folds)  # an expanding window
    for name, scores in cv["roc_auc"].items():
        assert len(scores["scores"]) == cheap.evaluation.cv_folds, name
        assert scores["mean"] == pytest.approx(np.mean(scores["scores"]))
        assert 0.5 < scores["mean"] < 1, name


def test_each_preprocessing_variant_exports_its_own_working_model(settings, table, comparison):
    variants = comparison[0]["preprocessing_variants"]
    assert [(v["missing"], v["categorical_encoding"]) for v in variants] == VARIANTS
    assert [v["shipped"] for v in variants].count(True) == 1
    rows = split_rows(table, "valid").head(2000)
    predictions = {}
    for variant in variants:
        model, schema = load_served_model(variant["export_dir"])
        assert schema["x-model"]["categorical"] == list(settings.features.categorical)
        assert model.indicators == (variant["missing"] == "median_indicator")
        assert model.one_hot == (variant["categorical_encoding"] == "one_hot")
        probability = predict_frame(model, schema, rows)[f"{settings.data.target}_probability"].to_numpy()
        assert np.all((probability > 0) & (probability < 1))
        predictions[(variant["missing"], variant["categorical_encoding"])] = probability
    for first, second in itertools.combinations(predictions, 2):
        assert np.abs(predictions[first] - predictions[second]).max() > 1e-3, (first, second)


def test_outputs_and_report_section(comparison):
    result, out_dir = comparison
    assert json.loads((out_dir / RESULTS).read_text())["models"].keys() == result["models"].keys()
    assert "| gradient boosting |" in (out_dir / TABLE).read_text()
    section = build_section(out_dir)
    assert section.figures and all(path.stat().st_size > 1000 for _, path in section.figures)
    assert all(isinstance(frame, pd.DataFrame) and not frame.empty for _, frame in section.tables)
    assert "logistic regression" in section.intro


def test_knn_remembers_only_the_most_recent_training_flights(cheap, table):
    train = split_rows(table, "train")
    knn = fit_baseline("knn", baseline_models(cheap)["knn"], train.sample(frac=1, random_state=0), cheap)
    kept = cheap.evaluation.knn_max_train_rows
    recent = train.sort_values(TIME, kind="stable").tail(kept)
    recent = recent[recent[TIME] > recent[TIME].min()]  # flights sharing the boundary minute may swap places
    assert knn[-1].n_samples_fit_ == kept
    distance, _ = knn[-1].kneighbors(knn[:-1].transform(recent[cheap.features.names]), n_neighbors=1)
    assert np.allclose(distance, 0, atol=1e-4)  # every recent flight is one of the rows it remembers
