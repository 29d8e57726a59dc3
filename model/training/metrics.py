"""How a model is scored, and the one rule that sets its decision threshold.

The threshold is decided once, when a model is trained (decision_threshold); it then travels
with the model (config.json, and the exported schema.json every later step reads)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, log_loss, roc_auc_score

from model.config import Settings


def classification_metrics(y_true: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, float]:
    probability = np.clip(np.asarray(probability, dtype=np.float64), 1e-7, 1 - 1e-7)
    return {
        "roc_auc": float(roc_auc_score(y_true, probability)),
        "pr_auc": float(average_precision_score(y_true, probability)),
        "brier": float(brier_score_loss(y_true, probability)),
        "log_loss": float(log_loss(y_true, probability, labels=[0, 1])),
        "accuracy": float(accuracy_score(y_true, probability >= threshold)),
        "positive_rate": float(np.mean(y_true)),
        "rows": int(len(y_true)),
    }


# Decision thresholds considered when the threshold is chosen by cost.
THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


def expected_cost(
    labels: np.ndarray,
    probability: np.ndarray,
    thresholds: np.ndarray,
    missed_positive_cost: float,
    false_alarm_cost: float,
) -> np.ndarray:
    """Cost per flight at each threshold: late flights nobody was warned about, and warnings
    for flights that arrived on time, each at its price."""
    labels = np.asarray(labels).astype(bool)
    warned = np.asarray(probability)[None, :] >= np.asarray(thresholds)[:, None]
    missed = (~warned & labels).sum(1)
    false_alarms = (warned & ~labels).sum(1)
    return (missed_positive_cost * missed + false_alarm_cost * false_alarms) / len(labels)


def choose_threshold(
    labels: np.ndarray,
    probability: np.ndarray,
    missed_positive_cost: float,
    false_alarm_cost: float,
    thresholds: np.ndarray = THRESHOLDS,
) -> float:
    """The grid threshold with the lowest expected cost on these rows (the lowest on ties)."""
    costs = expected_cost(labels, probability, thresholds, missed_positive_cost, false_alarm_cost)
    return float(thresholds[int(np.argmin(costs))])


def decision_threshold(settings: Settings, valid_labels: np.ndarray, valid_probability: np.ndarray) -> float:
    """The configured threshold, or the cheapest on the validation month (min_cost)."""
    if settings.serving.threshold != "min_cost":
        return float(settings.serving.threshold)
    costs = settings.evaluation
    return choose_threshold(valid_labels, valid_probability, costs.missed_positive_cost, costs.false_alarm_cost)
