"""Step 3, training: fit the tabular MLP on the train split of step 2 (early stopping and the
decision threshold on the valid split), then export it as TorchScript: <work>/export/model.pt
and schema.json, the files TorchServe serves.

    python examples/simple_pipeline/model_preparation.py [--work-dir DIR]

Uses model.training.train.train (weights + config in <work>/model, metrics.json) and
model.artifact.export.export_model.
"""

from __future__ import annotations

from workspace import step_printer, step_start

from model.artifact.export import export_model
from model.training.train import train

say = step_printer("3/4 training")


def main() -> None:
    _, settings = step_start(__doc__)
    say(f"training on {settings.paths.processed} (at most {settings.train.max_epochs} epochs)")
    metrics = train(settings)
    say(
        f"model {metrics['model_version']}: {metrics['epochs']} epochs, valid ROC AUC "
        f"{metrics['valid']['roc_auc']:.4f}, threshold {metrics['threshold']}, {metrics['train_seconds']:.0f} s"
    )
    exported = export_model(settings.paths.model_dir, settings.paths.export_dir)
    say(f"exported {exported}")


if __name__ == "__main__":
    main()
