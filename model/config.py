"""Typed view of params.yaml, validated once when a job starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "params.yaml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(Strict):
    processed: Path
    model_dir: Path
    export_dir: Path
    metrics: Path
    comparison: Path
    model_store: Path


class Window(Strict):
    start: str
    end: str


class Split(Strict):
    valid_start: str
    test_start: str


class DataSettings(Strict):
    source: Literal["flights"] = "flights"
    window: Window
    split: Split
    late_minutes: float = 15

    @model_validator(mode="after")
    def _ordered(self) -> DataSettings:
        bounds = [self.window.start, self.split.valid_start, self.split.test_start, self.window.end]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError(f"data window and split must be strictly ordered, got {bounds}")
        return self


class CategoricalFeature(Strict):
    required: bool
    description: str = ""


class NumericFeature(Strict):
    required: bool
    min: float
    max: float
    integer: bool = False
    period: float | None = Field(default=None, gt=0)
    description: str = ""


class Features(Strict):
    categorical: dict[str, CategoricalFeature]
    numeric: dict[str, NumericFeature]

    @property
    def names(self) -> list[str]:
        return [*self.categorical, *self.numeric]


class ModelSettings(Strict):
    name: str
    version: str
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
    threshold: float = Field(gt=0, lt=1)
    max_records: int = Field(gt=0)
    max_string_length: int = Field(gt=0)


class Settings(Strict):
    seed: int
    paths: Paths
    data: DataSettings
    features: Features
    model: ModelSettings
    train: TrainSettings
    serving: ServingSettings

    def with_overrides(self, overrides: dict[str, Any]) -> Settings:
        """A copy with nested keys replaced, e.g. {"train": {"max_epochs": 2}}."""
        return Settings.model_validate(_merge(self.model_dump(), overrides))


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(path: str | Path = DEFAULT_CONFIG) -> Settings:
    """Read params.yaml; relative paths in it are taken from the project root."""
    raw = yaml.safe_load(Path(path).read_text())
    raw["paths"] = {key: _rooted(value) for key, value in raw["paths"].items()}
    return Settings.model_validate(raw)


def _rooted(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else ROOT / path
