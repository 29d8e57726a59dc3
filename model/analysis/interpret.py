"""Why the model says what it says, and where to put the threshold.

    python -m model.analysis.interpret --config params.yaml     # writes <report_dir>/interpret/

- Permutation importance of the served model.pt on the test months: how much ROC AUC is
  lost when one feature's values are shuffled across flights.
- Integrated gradients (Captum) for single predictions of the MLP, per request field.
- The logistic regression's largest coefficients and the decision tree's first splits.
- Calibration of every model on the test months.
- The business view: expected cost per flight as a function of the threshold, with the
  threshold chosen on the validation month and its cost on the test months.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from captum.attr import LayerIntegratedGradients
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.tree import export_text

from model.analysis.baselines import LABELS, MLP, baseline_models, fit_baseline, late_probability
from model.analysis.layout import Section, save_figure
from model.analysis.section_job import section_main
from model.artifact.predict import exported_threshold, load_served_model, predict_probability
from model.config import Settings
from model.data.prepare import load_table
from model.data.sources import TARGET, TIME
from model.data.split import split_frames
from model.training.inputs import model_inputs
from model.training.metrics import THRESHOLDS, choose_threshold, expected_cost
from model.training.network import UNKNOWN, TabularNet
from model.training.weights import load_network

log = logging.getLogger(__name__)

RESULTS = "interpret.json"
ATTRIBUTIONS = "attributions.csv"
TOP = 15  # coefficients and importances listed
TREE_LEVELS = 3  # levels of the decision tree printed as rules


def permutation_importance(
    model: torch.jit.ScriptModule, schema: dict, frame: pd.DataFrame, repeats: int, seed: int
) -> pd.DataFrame:
    """ROC AUC lost when one request field is shuffled across the rows, everything else kept:
    what the served model relies on, measured through model.pt itself."""
    labels = frame[TARGET].to_numpy()
    reference = roc_auc_score(labels, predict_probability(model, schema, frame))
    generator = np.random.default_rng(seed)
    rows = []
    for name in [*schema["x-model"]["categorical"], *schema["x-model"]["numeric"]]:
        drops = []
        for _ in range(repeats):
            shuffled = frame.assign(**{name: frame[name].to_numpy()[generator.permutation(len(frame))]})
            drops.append(reference - roc_auc_score(labels, predict_probability(model, schema, shuffled)))
        rows.append(
            {
                "feature": name,
                "roc_auc_drop": float(np.mean(drops)),
                "std": float(np.std(drops)),
                "drops": [float(d) for d in drops],
            }
        )
    return pd.DataFrame(rows).sort_values("roc_auc_drop", ascending=False, ignore_index=True)


def integrated_gradients(network: TabularNet, frame: pd.DataFrame, steps: int) -> pd.DataFrame:
    """Per-flight attributions of the late-arrival logit, one column per request field.

    The path runs, in the space the MLP's first layer sees, from a reference flight to the
    flight explained. The reference has every number at its training fill value (not
    missing) and every category "unknown": an uninformed flight, so an attribution says how
    much knowing that field moved the logit. A number's attribution covers its scaled value,
    its sine/cosine and its missing indicator; a category's sums its embedding slice.
    Completeness: the fields' attributions add up to logit(flight) - logit(reference), up to
    the quadrature error reported as `delta`.
    """
    network = network.eval()
    categorical, numeric = model_inputs(frame, network.categorical, network.numeric)
    indices = network.category_indices(categorical, len(frame))
    reference = (torch.full_like(indices, UNKNOWN), network.fill.expand_as(numeric).clone())
    explainer = LayerIntegratedGradients(network.logits, network.mlp[0])
    attributions = explainer.attribute(
        (indices, numeric), baselines=reference, n_steps=steps, attribute_to_layer_input=True, internal_batch_size=8192
    )
    with torch.no_grad():
        logit, reference_logit = network.logits(indices, numeric), network.logits(*reference)
    columns = network.field_columns  # the layout exported with model.pt, as the handler reads it
    result = pd.DataFrame(
        {name: attributions[:, positions].sum(1).detach().numpy() for name, positions in columns.items()},
        index=frame.index,
    )
    result["logit"] = logit.numpy()
    result["reference_logit"] = reference_logit.numpy()
    result["delta"] = result[list(columns)].sum(axis=1) - (result["logit"] - result["reference_logit"])
    return result


def linear_coefficients(model: Pipeline, top: int = TOP) -> pd.DataFrame:
    """The logistic regression's largest weights, on standardized numbers and one-hot categories."""
    names = model[:-1].get_feature_names_out()
    frame = pd.DataFrame({"feature": [name.split("__", 1)[-1] for name in names], "coefficient": model[-1].coef_[0]})
    return frame.reindex(frame["coefficient"].abs().sort_values(ascending=False).index)[:top].reset_index(drop=True)


def tree_rules(model: Pipeline, levels: int = TREE_LEVELS, top: int = TOP) -> tuple[str, pd.DataFrame]:
    """The decision tree's first levels as text, and its impurity importances."""
    names = [name.split("__", 1)[-1] for name in model[:-1].get_feature_names_out()]
    tree = model[-1]
    rules = export_text(tree, feature_names=names, max_depth=levels, decimals=2)
    importance = pd.DataFrame({"feature": names, "importance": tree.feature_importances_})
    return rules, importance.sort_values("importance", ascending=False, ignore_index=True)[:top]


def business_view(
    settings: Settings, valid: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> dict[str, Any]:
    """Threshold chosen on the validation month, judged on the test months against the serving
    threshold and against warning nobody or everybody."""
    options = settings.evaluation
    prices = (options.missed_positive_cost, options.false_alarm_cost)
    chosen = choose_threshold(*valid, *prices)
    serving = exported_threshold(settings.paths.export_dir)

    def cost(rows: tuple[np.ndarray, np.ndarray], threshold: float) -> float:
        return float(expected_cost(*rows, np.array([threshold]), *prices)[0])

    return {
        "missed_positive_cost": prices[0],
        "false_alarm_cost": prices[1],
        # For calibrated probabilities the cost-minimizing threshold is this ratio.
        "calibrated_optimum": prices[1] / (prices[0] + prices[1]),
        "chosen_threshold": chosen,
        "serving_threshold": serving,
        "valid": {"chosen": cost(valid, chosen), "serving": cost(valid, serving)},
        "test": {
            "chosen": cost(test, chosen),
            "serving": cost(test, serving),
            "warn_nobody": cost(test, 1.01),
            "warn_everybody": cost(test, 0.0),
        },
        "curve": {
            "thresholds": THRESHOLDS.tolist(),
            "valid": expected_cost(*valid, THRESHOLDS, *prices).tolist(),
            "test": expected_cost(*test, THRESHOLDS, *prices).tolist(),
        },
    }


def calibration(labels: np.ndarray, probability: dict[str, np.ndarray], bins: int = 10) -> dict[str, Any]:
    """Observed late share against mean predicted probability, in bins of equal size."""
    curves = {}
    for name, values in probability.items():
        observed, predicted = calibration_curve(labels, values, n_bins=bins, strategy="quantile")
        curves[name] = {"predicted": predicted.tolist(), "observed": observed.tolist()}
    return curves


def plot_importance(importance: pd.DataFrame, attributions: pd.DataFrame, fields: list[str], out_dir: Path) -> Path:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
    ranked = importance.iloc[::-1]
    left.barh(ranked["feature"], ranked["roc_auc_drop"], xerr=ranked["std"], color="#4878a8")
    left.set(xlabel="ROC AUC lost when shuffled", title="Permutation importance (model.pt, test months)")
    mean_abs = attributions[fields].abs().mean().sort_values()
    right.barh(mean_abs.index, mean_abs.to_numpy(), color="#c8783c")
    right.set(xlabel="mean |attribution| (logit)", title="Integrated gradients, explained test flights")
    return save_figure(figure, out_dir / "importance.png")


def plot_calibration(curves: dict[str, Any], out_dir: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 5))
    for name, curve in curves.items():
        axis.plot(curve["predicted"], curve["observed"], marker="o", label=LABELS[name])
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    axis.set(xlabel="mean predicted probability", ylabel="observed late share", title="Calibration, test months")
    axis.legend(fontsize=8)
    return save_figure(figure, out_dir / "calibration.png")


def plot_cost(business: dict[str, Any], out_dir: Path) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4))
    curve = business["curve"]
    axis.plot(curve["thresholds"], curve["valid"], label="validation month")
    axis.plot(curve["thresholds"], curve["test"], label="test months")
    axis.axvline(
        business["chosen_threshold"],
        color="green",
        linestyle="--",
        label=f"chosen on validation ({business['chosen_threshold']:.2f})",
    )
    axis.axvline(
        business["serving_threshold"],
        color="grey",
        linestyle=":",
        label=f"serving threshold ({business['serving_threshold']:.2f})",
    )
    axis.set(
        xlabel="threshold",
        ylabel="expected cost per flight",
        title=f"Missed late flight = {business['missed_positive_cost']:g}, "
        f"false alarm = {business['false_alarm_cost']:g}",
    )
    axis.legend(fontsize=8)
    return save_figure(figure, out_dir / "cost.png")


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return frame.sample(min(rows, len(frame)), random_state=seed).sort_values(TIME, kind="stable")


def run(settings: Settings, table: pd.DataFrame | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Everything above on the configured data; writes interpret.json, attributions.csv and figures."""
    started = time.perf_counter()
    torch.set_num_threads(settings.train.threads)
    options = settings.evaluation
    out_dir = Path(out_dir or settings.paths.report_dir / "interpret")
    out_dir.mkdir(parents=True, exist_ok=True)
    table = load_table(settings) if table is None else table
    splits = split_frames(table)
    labels = {name: frame[TARGET].to_numpy() for name, frame in splits.items()}

    model, schema = load_served_model(settings.paths.export_dir)
    network, config = load_network(settings.paths.model_dir)
    if config["version"] != schema["x-model"]["version"]:
        raise ValueError(
            f"{settings.paths.model_dir} holds model {config['version']} but {settings.paths.export_dir} "
            f"serves {schema['x-model']['version']}: export again (make train) before explaining"
        )
    fields = [*schema["x-model"]["categorical"], *schema["x-model"]["numeric"]]
    probability = {name: predict_probability(model, schema, splits[name]) for name in ("valid", "test")}

    importance = permutation_importance(
        model,
        schema,
        _sample(splits["test"], options.permutation_rows, settings.seed),
        options.permutation_repeats,
        settings.seed,
    )
    log.info(
        "permutation importance: %s",
        ", ".join(f"{r.feature} {r.roc_auc_drop:.4f}" for r in importance.head(5).itertuples()),
    )
    explained = _sample(splits["test"], options.explain_rows, settings.seed)
    attributions = integrated_gradients(network, explained, options.ig_steps)
    change = (attributions["logit"] - attributions["reference_logit"]).abs()
    log.info(
        "integrated gradients: |delta| max %.4f, mean %.4f against a mean |logit change| of %.3f",
        attributions["delta"].abs().max(),
        attributions["delta"].abs().mean(),
        change.mean(),
    )

    fitted = {
        name: fit_baseline(name, pipeline, splits["train"], settings)
        for name, pipeline in baseline_models(settings).items()
    }
    test_probability = {
        MLP: probability["test"],
        **{name: late_probability(m, splits["test"], settings) for name, m in fitted.items()},
    }
    rules, tree_importance = tree_rules(fitted["decision_tree"])
    business = business_view(settings, (labels["valid"], probability["valid"]), (labels["test"], probability["test"]))
    log.info(
        "threshold %.2f chosen on validation: test cost per flight %.4f, against %.4f at %.2f",
        business["chosen_threshold"],
        business["test"]["chosen"],
        business["test"]["serving"],
        business["serving_threshold"],
    )

    result = {
        "model_version": schema["x-model"]["version"],
        "permutation_importance": {
            "rows": min(options.permutation_rows, len(splits["test"])),
            "repeats": options.permutation_repeats,
            "features": importance.to_dict("records"),
        },
        "integrated_gradients": {
            "rows": len(explained),
            "steps": options.ig_steps,
            "output": "logit",
            "reference": "numbers at their training fill value, categories unknown",
            "mean_abs_attribution": attributions[fields].abs().mean().sort_values(ascending=False).to_dict(),
            "completeness": {
                "max_abs_delta": float(attributions["delta"].abs().max()),
                "mean_abs_delta": float(attributions["delta"].abs().mean()),
                "mean_abs_logit_change": float(change.mean()),
            },
        },
        "logistic_regression_coefficients": linear_coefficients(fitted["logistic_regression"]).to_dict("records"),
        "decision_tree": {"rules": rules, "importance": tree_importance.to_dict("records")},
        "calibration": calibration(labels["test"], test_probability),
        "business": business,
    }
    named = attributions.rename(columns={field: f"{field}_attribution" for field in fields})
    pd.concat([explained[[TIME, *fields, TARGET]], named], axis=1).to_csv(out_dir / ATTRIBUTIONS, index=False)
    plot_importance(importance, attributions, fields, out_dir)
    plot_calibration(result["calibration"], out_dir)
    plot_cost(business, out_dir)
    # The run time is logged, not written: the same model and data give the same files.
    (out_dir / RESULTS).write_text(json.dumps(result, indent=2) + "\n")
    log.info("interpretation written to %s in %.0f s", out_dir, time.perf_counter() - started)
    return result


def build_section(out_dir: Path) -> Section:
    """The report's section, from what `run` wrote into out_dir."""
    out_dir = Path(out_dir)
    result = json.loads((out_dir / RESULTS).read_text())
    business, ig = result["business"], result["integrated_gradients"]
    importance = pd.DataFrame(result["permutation_importance"]["features"]).drop(columns="drops")
    top = importance.iloc[0]
    saving = business["test"]["serving"] - business["test"]["chosen"]
    intro = (
        f"Shuffling {top['feature']} costs the served model {top['roc_auc_drop']:.3f} of test ROC AUC, more than "
        f"any other field. Integrated gradients explain {ig['rows']} test flights per field; their attributions "
        f"add up to the logit change within {ig['completeness']['max_abs_delta']:.3f} (mean change "
        f"{ig['completeness']['mean_abs_logit_change']:.2f}). With a missed late flight costing "
        f"{business['missed_positive_cost']:g} and a false alarm {business['false_alarm_cost']:g}, the "
        f"threshold chosen on the validation month is {business['chosen_threshold']:.2f}: on the test months it "
        f"costs {business['test']['chosen']:.3f} per flight against {business['test']['serving']:.3f} at "
        f"{business['serving_threshold']:.2f} ({saving:+.3f} saved per flight)."
    )
    costs = pd.DataFrame(
        [
            {
                "threshold": f"chosen on validation ({business['chosen_threshold']:.2f})",
                **{k: business[k]["chosen"] for k in ("valid", "test")},
            },
            {
                "threshold": f"serving ({business['serving_threshold']:.2f})",
                **{k: business[k]["serving"] for k in ("valid", "test")},
            },
            {"threshold": "warn nobody", "test": business["test"]["warn_nobody"]},
            {"threshold": "warn everybody", "test": business["test"]["warn_everybody"]},
        ]
    )
    attributions = pd.Series(ig["mean_abs_attribution"]).rename_axis("feature").reset_index(name="mean |attribution|")
    return Section(
        title="Interpretation and decision threshold",
        intro=intro,
        tables=[
            ("Permutation importance of model.pt on the test months (ROC AUC lost)", importance),
            ("Integrated gradients: mean absolute attribution per field (logit)", attributions),
            ("Logistic regression: largest coefficients", pd.DataFrame(result["logistic_regression_coefficients"])),
            ("Decision tree: impurity importance", pd.DataFrame(result["decision_tree"]["importance"])),
            (
                f"Decision tree: the first {TREE_LEVELS} levels",
                pd.DataFrame({"rule": result["decision_tree"]["rules"].splitlines()}),
            ),
            ("Expected cost per flight", costs),
        ],
        figures=[
            ("Permutation importance and integrated gradients", out_dir / "importance.png"),
            ("Calibration on the test months", out_dir / "calibration.png"),
            ("Expected cost per flight against the threshold", out_dir / "cost.png"),
        ],
    )


def main() -> None:
    section_main(__doc__, "interpret", run)


if __name__ == "__main__":
    main()
