"""Train the network on the time split, keep the best epoch, choose the threshold, save the
weights and config, score valid and test.

    python -m model.training.train --config params.yaml     # or: make train

As a command (the pipeline's train stage) it trains with CPU-independent numerics, so any
x86-64 machine writes the same weights (model/training/reproducible.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from model import configure_logging
from model.config import DEFAULT_CONFIG, Settings, load_settings
from model.data.fingerprint import file_hash
from model.data.prepare import load_table
from model.data.sources import TARGET
from model.data.split import split_frames
from model.training.inputs import model_inputs
from model.training.metrics import classification_metrics, decision_threshold
from model.training.network import UNKNOWN, TabularNet
from model.training.preprocessing import fit_preprocessing
from model.training.reproducible import pin_torch, run_pinned
from model.training.weights import CONFIG, load_network, save_pretrained

log = logging.getLogger(__name__)


class Encoded:
    """One split, encoded once: category indices, raw numbers, labels."""

    def __init__(self, network: TabularNet, frame: pd.DataFrame):
        categorical, self.numeric = model_inputs(frame, network.categorical, network.numeric)
        self.indices = network.category_indices(categorical, len(frame))
        self.labels = torch.tensor(frame[TARGET].to_numpy(), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.labels)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def predict_encoded(network: TabularNet, data: Encoded, batch_size: int = 8192) -> np.ndarray:
    network.eval()
    chunks = [
        torch.sigmoid(network.logits(data.indices[i : i + batch_size], data.numeric[i : i + batch_size]))
        for i in range(0, len(data), batch_size)
    ]
    return torch.cat(chunks).numpy() if chunks else np.empty(0, dtype=np.float32)


def fit(
    network: TabularNet,
    train: Encoded,
    valid: Encoded,
    settings: Settings,
    generator: torch.Generator,
    verbose: bool = False,
) -> list[dict[str, float]]:
    """Adam on log loss; stops when validation ROC AUC has not improved for `patience` epochs
    and restores the best epoch's weights. Ranking, not log loss, decides: the late share
    moves from month to month, and log loss would punish the base rate, not the ranking."""
    options = settings.train
    optimizer = torch.optim.Adam(network.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    best_auc, best_state, stale, history = 0.0, None, 0, []
    for epoch in range(1, options.max_epochs + 1):
        network.train()
        order = torch.randperm(len(train), generator=generator)
        batches = tqdm(
            range(0, len(train), options.batch_size),
            desc=f"epoch {epoch}/{options.max_epochs}",
            unit="batch",
            leave=verbose,
            disable=None,
        )
        running = 0.0
        for start in batches:
            rows = order[start : start + options.batch_size]
            indices = train.indices[rows]
            # Teach the "unknown" rows: categories unseen in training must still mean something.
            dropped = torch.rand(indices.shape, generator=generator) < settings.model.unknown_rate
            indices = indices.masked_fill(dropped, UNKNOWN)
            loss = loss_fn(network.logits(indices, train.numeric[rows]), train.labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item() * len(rows)
        valid_auc = float(roc_auc_score(valid.labels.numpy(), predict_encoded(network, valid)))
        history.append({"epoch": epoch, "train_loss": running / len(train), "valid_roc_auc": valid_auc})
        log.info("epoch %d: train loss %.4f, valid ROC AUC %.4f", epoch, running / len(train), valid_auc)
        if valid_auc > best_auc + 1e-4:
            best_auc, stale = valid_auc, 0
            best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        else:
            stale += 1
            if stale >= options.patience:
                log.info("early stop: no validation improvement for %d epochs", stale)
                break
    if best_state is not None:
        network.load_state_dict(best_state)
    return history


def network_config(settings: Settings, train_rows: pd.DataFrame) -> dict[str, Any]:
    """The network's architecture and preprocessing constants, fitted on these rows."""
    model = settings.model
    return {
        **fit_preprocessing(train_rows, settings.features, model.min_category_count, model.missing),
        "categorical_encoding": model.categorical_encoding,
        "embedding_dim": model.embedding_dim,
        "hidden": model.hidden,
        "dropout": model.dropout,
    }


def time_splits(settings: Settings, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    splits = split_frames(table)
    for name, frame in splits.items():
        if frame.empty:
            raise ValueError(f"the {name} split is empty: check data.window and data.split in the config")
        log.info("%s: %d rows, %.1f%% %s", name, len(frame), 100 * frame[TARGET].mean(), settings.data.target)
    return splits


def train(settings: Settings, table: pd.DataFrame | None = None, verbose: bool = False) -> dict[str, Any]:
    """The whole training job: weights + config.json in paths.model_dir, metrics.json; returns the
    metrics. model.pt is the export's job (model/artifact/export.py)."""
    started = time.perf_counter()
    generator = seed_everything(settings.seed)
    torch.set_num_threads(settings.train.threads)
    table = load_table(settings) if table is None else table
    splits = time_splits(settings, table)

    config = {
        "model_type": "tabular-mlp",
        "name": settings.model.name,
        "target": settings.data.target,
        **network_config(settings, splits["train"]),
        "features": settings.features.model_dump(),
        "serving": settings.serving.model_dump(),
        "seed": settings.seed,
    }
    network = TabularNet.from_config(config)
    encoded = {name: Encoded(network, frame) for name, frame in splits.items()}
    history = fit(network, encoded["train"], encoded["valid"], settings, generator, verbose)
    return save_and_score(settings, network, config, encoded, history, started)


def save_and_score(
    settings: Settings,
    network: TabularNet,
    config: dict[str, Any],
    encoded: dict[str, Encoded],
    history: list[dict[str, float]],
    started: float,
    **extra: Any,
) -> dict[str, Any]:
    """Choose the threshold on validation, save weights + config, write metrics.json (with
    `extra` facts about the training added)."""
    probability = {name: predict_encoded(network, encoded[name]) for name in ("valid", "test")}
    threshold = decision_threshold(settings, encoded["valid"].labels.numpy(), probability["valid"])
    config["serving"]["threshold"] = threshold
    version = save_pretrained(network, config, settings.paths.model_dir, settings.model.version)
    seconds = time.perf_counter() - started
    metrics = {
        "model_version": version,
        "threshold": threshold,
        "epochs": len(history),
        **{
            name: classification_metrics(encoded[name].labels.numpy(), probability[name], threshold)
            for name in ("valid", "test")
        },
        "history": history,
        **extra,
    }
    settings.paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    settings.paths.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    # The wall time describes the run, not the model: kept beside the metrics, so that training
    # twice gives the same metrics file (DVC sees nothing changed).
    run_record(settings).write_text(json.dumps({"model_version": version, "train_seconds": seconds}) + "\n")
    log.info(
        "model %s: valid ROC AUC %.4f, test ROC AUC %.4f (%.0f s)",
        version,
        metrics["valid"]["roc_auc"],
        metrics["test"]["roc_auc"],
        seconds,
    )
    return {**metrics, "train_seconds": seconds}


def run_record(settings: Settings) -> Path:
    """The last training run's wall time: <metrics>.run.json."""
    return settings.paths.metrics.with_suffix(".run.json")


def fine_tune(
    settings: Settings, table: pd.DataFrame, base_dir: Path, epochs: int, learning_rate: float, verbose: bool = False
) -> dict[str, Any]:
    """A warm start: continue training the model saved in `base_dir` (config.json + weights) on
    `table`'s train split for at most `epochs` epochs at `learning_rate`, with the same early
    stopping on the valid split and the same outputs as train().

    The base model's preprocessing is kept as it is (vocabularies, imputation and scaling
    constants, architecture): its weights only mean something with them. Categories that
    appeared after the base model was fitted therefore stay "unknown" to it; training from
    scratch refits them, which is why the two are compared before a promotion.
    """
    started = time.perf_counter()
    generator = seed_everything(settings.seed)
    torch.set_num_threads(settings.train.threads)
    network, base = load_network(base_dir)
    contract = (list(settings.features.categorical), list(settings.features.numeric))
    if (base["categorical"], base["numeric"]) != contract:
        raise ValueError(
            f"{base_dir} was trained on features {base['categorical'] + base['numeric']}, the config "
            f"names {contract[0] + contract[1]}: a warm start needs the same feature contract"
        )
    splits = time_splits(settings, table)
    # The served version and the registry's ids of the base are not this model's; the threshold is re-chosen.
    config = {key: value for key, value in base.items() if key not in ("version", "model_id")}
    config["serving"] = settings.serving.model_dump()
    encoded = {name: Encoded(network, frame) for name, frame in splits.items()}
    tuning = settings.with_overrides({"train": {"max_epochs": epochs, "learning_rate": learning_rate}})
    log.info("warm start from %s (%s): %d epochs at learning rate %g", base_dir, base["version"], epochs, learning_rate)
    history = fit(network, encoded["train"], encoded["valid"], tuning, generator, verbose)
    return save_and_score(
        settings,
        network,
        config,
        encoded,
        history,
        started,
        warm_start={"from": base["version"], "epochs": epochs, "learning_rate": learning_rate},
    )


def main() -> None:
    run_pinned("model.training.train")  # re-executes before torch and numpy are used
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument("--verbose", action="store_true", help="debug logging, keep every epoch's bar")
    parser.add_argument("--no-tracking", action="store_true", help="do not record the run in MLflow")
    args = parser.parse_args()
    configure_logging(args.verbose)
    settings = load_settings(args.config)
    pin_torch(settings.train.threads)
    metrics = train(settings, verbose=args.verbose)
    if not args.no_tracking:
        from model.training.tracking import track_training  # MLflow is heavy: imported when it is used

        track_training(
            settings, metrics, file_hash(settings.paths.processed), artifacts=[settings.paths.model_dir / CONFIG]
        )


if __name__ == "__main__":
    main()
