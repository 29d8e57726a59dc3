"""The canary's verdict, with no I/O: is the candidate not worse than production on the model
metric (ROC AUC on the same labelled records) and on the canary traffic's p95 latency and
error share? The reasons either way, as sentences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.config import Settings


@dataclass(frozen=True)
class Verdict:
    candidate: str
    production: str
    promoted: bool
    reasons: list[str]
    traffic: dict[str, Any]
    roc_auc: dict[str, float]


def judge(settings: Settings, traffic: dict[str, Any], roc_auc: dict[str, float]) -> tuple[bool, list[str]]:
    """Not worse than production on the model metric and on latency and errors; the reasons either way."""
    rules = settings.canary
    production, candidate = traffic["production"], traffic["candidate"]
    seen = traffic["versions"]
    reasons, passed = [], True
    floor = roc_auc[production] - rules.roc_auc_tolerance
    ok = roc_auc[candidate] >= floor
    passed &= ok
    reasons.append(
        f"ROC AUC {roc_auc[candidate]:.4f} vs production {roc_auc[production]:.4f} "
        f"(floor {floor:.4f}): {'ok' if ok else 'worse'}"
    )
    if seen[candidate]["requests"] == 0:
        passed = False
        reasons.append("the candidate received no canary traffic")
    else:
        # No p95 (None) when a version had no answer below 500: nothing is within a ceiling then.
        p95 = {
            version: float("nan") if seen[version]["p95_ms"] is None else seen[version]["p95_ms"]
            for version in (production, candidate)
        }
        ceiling = p95[production] * rules.latency_ratio + rules.latency_slack_ms
        ok = p95[candidate] <= ceiling
        passed &= ok
        reasons.append(
            f"p95 {p95[candidate]:.1f} ms vs production {p95[production]:.1f} ms "
            f"(ceiling {ceiling:.1f} ms): {'ok' if ok else 'slower'}"
        )
        ok = seen[candidate]["error_share"] <= seen[production]["error_share"]
        passed &= ok
        reasons.append(
            f"5xx share {seen[candidate]['error_share']:.2%} vs production "
            f"{seen[production]['error_share']:.2%}: {'ok' if ok else 'more errors'}"
        )
    return passed, reasons
