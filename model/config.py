"""Typed view of params.yaml, validated once when a job starts."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "params.yaml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(Strict):
    raw: Path
    processed: Path
    quality: Path
    quality_db: Path
    model_dir: Path
    export_dir: Path
    metrics: Path
    comparison: Path
    model_store: Path
    report_dir: Path
    registry: Path
    plots: Path
    tracking: Path


class Window(Strict):
    start: str
    end: str


class Split(Strict):
    valid_start: str
    test_start: str


class FlightsSource(Strict):
    late_minutes: float = 15


class SyntheticSource(Strict):
    """A daily, temperature-like process per station; see model/data/synthetic.py."""

    dir: Path
    start: str
    days: int = Field(gt=0)
    stations: int = Field(gt=0)
    noise: float = Field(ge=0)
    missing_rate: float = Field(ge=0, lt=1)
    anomaly_rate: float = Field(ge=0, lt=1)
    drift_start: str | None = None  # from this day on, temperatures shift by drift_shift
    drift_shift: float = 0.0
    test_start: str  # days from here on are written to test/, the rest to train/


class CsvSource(Strict):
    path: Path | None = None
    time_column: str = "time"
    target_column: str = "target"
    # The target column's value that counts as 1 when it holds two other values than 0/1 or
    # true/false (e.g. "Charged Off" beside "Fully Paid"); unset, it must hold 0/1.
    positive: str | None = None


class DataSettings(Strict):
    source: Literal["flights", "synthetic", "csv"] = "flights"
    target: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    window: Window
    split: Split
    batch: str = "M"
    flights: FlightsSource = FlightsSource()
    synthetic: SyntheticSource | None = None
    csv: CsvSource = CsvSource()

    @model_validator(mode="after")
    def _ordered(self) -> DataSettings:
        bounds = [self.window.start, self.split.valid_start, self.split.test_start, self.window.end]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError(f"data window and split must be strictly ordered, got {bounds}")
        return self


class CategoricalFeature(Strict):
    required: bool
    description: str = ""
    max_missing: float | None = Field(default=None, ge=0, le=1)


class NumericFeature(Strict):
    required: bool
    min: float
    max: float
    integer: bool = False
    period: float | None = Field(default=None, gt=0)
    description: str = ""
    max_missing: float | None = Field(default=None, ge=0, le=1)


class Features(Strict):
    categorical: dict[str, CategoricalFeature]
    numeric: dict[str, NumericFeature]

    @property
    def names(self) -> list[str]:
        return [*self.categorical, *self.numeric]


class QualitySettings(Strict):
    """Per batch and column: a batch over a limit stops the pipeline."""

    max_missing: float = Field(ge=0, le=1)
    max_out_of_range: float = Field(ge=0, le=1)
    out_of_range: Literal["missing", "clip", "drop"]
    max_duplicates: float = Field(ge=0, le=1)
    drop_duplicates: bool = True
    min_rows: int = Field(ge=1)


class DriftSettings(Strict):
    """Per feature and for the predictions: a batch against the training reference."""

    psi_bins: int = Field(ge=2)
    psi_threshold: float = Field(gt=0)  # PSI above this flags drift (0.1 watch, 0.2 act)
    p_value: float = Field(gt=0, lt=1)  # KS (numbers) / chi-square (categories) below this flags drift


class EvaluationSettings(Strict):
    """Baselines, cross-validation over time, interpretation and the business view."""

    cv_folds: int = Field(ge=2)
    knn_neighbors: int = Field(ge=1)
    knn_max_train_rows: int = Field(ge=100)
    tree_max_depth: int = Field(ge=1)
    permutation_repeats: int = Field(ge=1)
    permutation_rows: int = Field(ge=100)
    explain_rows: int = Field(ge=1)
    ig_steps: int = Field(ge=2)
    missed_positive_cost: float = Field(gt=0)  # e.g. a late flight nobody was warned about
    false_alarm_cost: float = Field(gt=0)  # e.g. a warning for a flight that arrives on time


class ModelSettings(Strict):
    name: str
    version: str
    missing: Literal["median_indicator", "constant"] = "median_indicator"
    categorical_encoding: Literal["embedding", "one_hot"] = "embedding"
    embedding_dim: int = Field(gt=0)
    hidden: list[int]
    dropout: float = Field(ge=0, lt=1)
    unknown_rate: float = Field(ge=0, lt=1)
    min_category_count: int = Field(ge=1)


class TrainSettings(Strict):
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    batch_size: int = Field(gt=0)
    max_epochs: int = Field(gt=0)
    patience: int = Field(gt=0)
    threads: int = Field(gt=0)


class ServingSettings(Strict):
    # A number, or min_cost: chosen at training on the validation month to minimize
    # evaluation.missed_positive_cost and false_alarm_cost.
    threshold: Annotated[float, Field(gt=0, lt=1)] | Literal["min_cost"]
    max_records: int = Field(gt=0)
    max_string_length: int = Field(gt=0)


class CanarySettings(Strict):
    share: float = Field(gt=0, lt=1)  # of prediction traffic the router sends to the candidate
    requests: int = Field(gt=0)  # labelled requests replayed through the router
    concurrency: int = Field(gt=0)
    roc_auc_tolerance: float = Field(ge=0)  # promoted when ROC AUC >= production's - this
    latency_ratio: float = Field(ge=1)  # ... and p95 latency <= production's * this + slack
    latency_slack_ms: float = Field(ge=0)


class Settings(Strict):
    seed: int
    paths: Paths
    data: DataSettings
    features: Features
    quality: QualitySettings
    drift: DriftSettings
    evaluation: EvaluationSettings
    model: ModelSettings
    train: TrainSettings
    serving: ServingSettings
    canary: CanarySettings
    stream: StreamSettings

    def with_overrides(self, overrides: dict[str, Any]) -> Settings:
        """A copy with nested keys replaced, e.g. {"train": {"max_epochs": 2}}."""
        return Settings.model_validate(_merge(self.model_dump(), overrides, replace={"features"}))


def _merge(base: dict[str, Any], overrides: dict[str, Any], replace: Collection[str] = ()) -> dict[str, Any]:
    """Deep merge; keys in `replace` are taken whole from the overrides (a feature list is
    a contract, not a patch)."""
    merged = dict(base)
    for key, value in overrides.items():
        if key not in replace and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_params(path: str | Path) -> dict[str, Any]:
    """A params file as a dict. A file may start from another with `base: other.yaml`
    (relative to itself) and replace only what differs, section by section."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    base = raw.pop("base", None)
    return _merge(read_params(path.parent / base), raw, replace={"features"}) if base else raw


def load_settings(path: str | Path = DEFAULT_CONFIG) -> Settings:
    """Read params.yaml; relative paths in it are taken from the project root."""
    raw = read_params(path)
    raw["paths"] = {key: _rooted(value) for key, value in raw["paths"].items()}
    synthetic = raw.get("data", {}).get("synthetic")
    if synthetic and "dir" in synthetic:
        synthetic["dir"] = _rooted(synthetic["dir"])
    csv = raw.get("data", {}).get("csv")
    if csv and csv.get("path"):
        csv["path"] = _rooted(csv["path"])
    return Settings.model_validate(raw)


def _rooted(value: str | Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else ROOT / path


class RetrainRule(Strict):
    """When `run.py --mode update` retrains: any one condition is enough
    (see model/lifecycle/continuous_training.py)."""

    drifted_features: int = Field(ge=1)  # a new batch with at least this many drifted features
    ignore_features: list[str] = []  # ... not counting these (they drift by construction)
    prediction_drift: bool  # ... or the production model's predictions drift
    auc_drop: float = Field(ge=0)  # ... or production's ROC AUC on the newest batch is this far
    #                                            below its validation ROC AUC (metric decay)
    max_batches: int = Field(ge=1)  # ... or this many batches arrived since the last training


class WarmStart(Strict):
    epochs: int = Field(gt=0)
    learning_rate: float = Field(gt=0)


class StreamSettings(Strict):
    """The time-ordered replay of the source in batches, with continuous training (run.py)."""

    dir: Path  # the raw store, the replay's registry and model store, logs
    batch: str = "W"  # a pandas period: W = weeks, Monday to Sunday
    bootstrap_batches: int = Field(ge=3)  # the first update trains on these and promotes the model
    batches_per_update: int = Field(ge=1)
    window_batches: int = Field(ge=2)  # retraining uses the newest batches before the held-out one
    valid_batches: int = Field(ge=1)  # ... of which these last ones validate
    retrain: RetrainRule
    warm_start: WarmStart
    promote_tolerance: float = Field(ge=-1, le=1)  # promoted when held-out ROC AUC >= production's - this
    baseline_margin: float = Field(ge=-1, le=1)  # ... and >= the first production version's - this (the floor)

    @model_validator(mode="before")
    @classmethod
    def _rooted_dir(cls, data: Any) -> Any:
        return {**data, "dir": _rooted(data["dir"])} if isinstance(data, dict) and "dir" in data else data

    @model_validator(mode="after")
    def _windows(self) -> StreamSettings:
        if self.valid_batches >= self.window_batches:
            raise ValueError(
                f"stream.valid_batches ({self.valid_batches}) must be below stream.window_batches "
                f"({self.window_batches}): some batches must be left to train on"
            )
        if self.bootstrap_batches < self.valid_batches + 2:
            raise ValueError(
                f"stream.bootstrap_batches ({self.bootstrap_batches}) must hold the training, "
                f"validation ({self.valid_batches}) and one held-out batch"
            )
        return self


Settings.model_rebuild()  # Settings names StreamSettings before it is defined
