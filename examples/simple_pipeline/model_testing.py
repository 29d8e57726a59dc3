"""Step 4, testing: load the exported model.pt of step 3, score the test split of step 2 (the
held-out last year) at the model's own decision threshold and print the metrics. Exits with 1
when the ROC AUC is below --min-roc-auc.

    python examples/simple_pipeline/model_testing.py [--work-dir DIR] [--min-roc-auc 0.6]

Uses model.artifact.predict (load_served_model, predict_probability: the same code path as
offline scoring), model.data.split.split_rows and model.training.metrics.classification_metrics.
"""

from __future__ import annotations

import sys

from workspace import step_printer, step_start

from model.artifact.predict import load_served_model, predict_probability
from model.data.prepare import load_table
from model.data.sources import TARGET
from model.data.split import split_rows
from model.training.metrics import classification_metrics

say = step_printer("4/4 testing")


def main() -> None:
    args, settings = step_start(
        __doc__,
        lambda parser: parser.add_argument(
            "--min-roc-auc", type=float, default=0.6, help="fail below this test ROC AUC (default 0.6)"
        ),
    )
    model, schema = load_served_model(settings.paths.export_dir)
    facts = schema["x-model"]
    test = split_rows(load_table(settings), "test")
    threshold = float(facts["threshold"])
    say(
        f"model {facts['version']} from {settings.paths.export_dir}, test split: {len(test)} rows, "
        f"threshold {threshold}"
    )
    metrics = classification_metrics(test[TARGET].to_numpy(), predict_probability(model, schema, test), threshold)
    for name, value in metrics.items():
        say(f"  {name:<14} {value:.4f}" if isinstance(value, float) else f"  {name:<14} {value}")
    roc_auc = metrics["roc_auc"]
    passed = roc_auc >= args.min_roc_auc
    say(f"ROC AUC {roc_auc:.4f} {'>=' if passed else '<'} {args.min_roc_auc}: {'passed' if passed else 'FAILED'}")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
