"""Draft a params file for a CSV: the time and target columns, every other column as a
categorical or numeric feature with bounds and a required flag read from the data, the window,
split and quality batch from the time column, and paths of its own. The file is commented
with what each choice rests on; check it, edit it, then `make run CONFIG=<the file>`.

    python -m model.data.draft_config --csv data/loans.csv --out configs/loans.yaml
    make draft-config CSV=data/loans.csv NAME=loans

A CSV it cannot draft for (no column of dates or times, no column of two values to predict, a
named column that does not fit) is refused with the reason and the fix; columns left out
(identifiers, free text, a single value, a second date) are listed in the file and on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from model.config import DEFAULT_CONFIG, ROOT, load_settings
from model.data.quality import measure, problems
from model.data.sources import load_source

# Name hints: they only order candidates the values already allow.
TIME_NAME = re.compile(r"(^|_)(time|date|datetime|timestamp|ts|day|issued?|created|start(ed)?)(_|$)|_(at|on|d)$", re.I)
TARGET_NAME = re.compile(
    r"(^|_)(target|label|y|class|outcome|status|default(ed)?|churn(ed)?|fail(ed|ure)?"
    r"|fraud|late|delayed|result)(_|$)",
    re.I,
)
FLAG_NAME = re.compile(r"^(is|has|was)_|_(flag|ind)$", re.I)
ID_NAME = re.compile(r"(^|_)(id|uuid|guid|key|number|no|nr|ref|reference)$", re.I)
# A value of a two-valued target that names the event to predict.
POSITIVE_VALUE = re.compile(
    r"^(1|true|yes|y|t|positive|pos|fail(ed|ure)?|default(ed)?|charged off|late|delayed"
    r"|fraud|churn(ed)?|bad|event)$",
    re.I,
)
LOOKS_DATED = re.compile(r"\d{1,4}[-/.:]\d{1,2}|^[A-Za-z]{3,9}[- ]\d{2,4}$|\d{4}[-/]?[A-Za-z]{3}")
NUMBER_IN_TEXT = re.compile(r"^\s*[$€£]?\s*-?[\d,]*\.?\d+\s*(%|[A-Za-z][A-Za-z ]{0,11})?\s*$")
TIME_SHARE = 0.95  # of a column's values that must read as times
ID_SHARE = 0.95  # distinct values per row above which a text or integer column names rows
MAX_CATEGORIES = 500  # distinct values above which a text column is not a category
TRAIN_SHARE, VALID_SHARE = 0.70, 0.15  # of the rows, in time order; the test gets the rest
BATCHES = ("M", "W", "Q", "Y")  # quality batches tried: calendar month first
SAMPLE = 2000  # values read to tell a column's kind


class DraftError(ValueError):
    """The CSV cannot get a params file as it is; the message says why and what to do."""


@dataclass
class Draft:
    csv: Path
    rows: int
    columns: int
    time: str
    target: str
    positive: str | None
    target_note: str
    other_targets: list[str] = field(default_factory=list)  # columns of two values that could be the target
    categorical: dict[str, dict[str, Any]] = field(default_factory=dict)
    numeric: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # feature -> what the data showed
    left_out: dict[str, str] = field(default_factory=dict)  # column -> why
    window: dict[str, str] = field(default_factory=dict)
    split: dict[str, str] = field(default_factory=dict)
    batch: str = "M"
    split_note: str = ""
    batch_size: int = 1024
    problems: list[str] = field(default_factory=list)  # quality limits the drafted file breaks on the CSV


def sample(values: pd.Series, size: int = SAMPLE) -> pd.Series:
    present = values.dropna()
    return present.sample(size, random_state=0) if len(present) > size else present


def time_share(values: pd.Series) -> float:
    """The share of a text column's values that read as times, as the csv source reads them."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return 1.0
    if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
        return 0.0
    present = sample(values).astype(str)
    if present.empty or present.str.contains(LOOKS_DATED).mean() < TIME_SHARE:
        return 0.0
    parsed = _times(present)
    return float(parsed.notna().mean())


def _times(values: pd.Series) -> pd.Series[pd.Timestamp]:
    """The values as times where they read as such, as the csv source reads them (pandas' own
    format inference); all missing (NaT) when pandas cannot read the column at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Could not infer format": the share tells
        try:
            return pd.to_datetime(values, errors="coerce")
        except (ValueError, TypeError, OverflowError):
            return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")


def examples(values: pd.Series, count: int = 3) -> str:
    shares = values.value_counts(normalize=True, dropna=True).head(count)
    return ", ".join(f"{value!s} {share:.0%}" for value, share in shares.items())


def choose_time(frame: pd.DataFrame, wanted: str | None) -> tuple[str, list[str]]:
    """The time column and the other columns of times."""
    shares = {name: time_share(frame[name]) for name in frame.columns}
    times = [name for name, share in shares.items() if share >= TIME_SHARE]
    if wanted is not None:
        if wanted not in frame.columns:
            raise DraftError(f"--time-column {wanted}: no such column; the columns are {', '.join(frame.columns)}")
        if wanted not in times:
            raise DraftError(
                f"--time-column {wanted}: {shares[wanted]:.0%} of its values read as dates or times "
                f"(e.g. {', '.join(map(str, sample(frame[wanted], 3)))}), {TIME_SHARE:.0%} are needed"
            )
        return wanted, [name for name in times if name != wanted]
    if not times:
        named = [name for name in frame.columns if TIME_NAME.search(str(name))]
        hint = (
            f" (by their names: {', '.join(map(str, named))}, but their values do not read as dates)" if named else ""
        )
        raise DraftError(
            f"no time column found: no column holds dates or times in {TIME_SHARE:.0%} of its values{hint}. "
            "The pipeline splits, checks and tests the data by time, so the CSV needs a column of when each row "
            "happened (e.g. 2024-03-01 or 2024-03-01 14:30): add one, or name it with --time-column"
        )

    # Of several, the earliest: a later date (a last payment, a closing) often records the outcome.
    def rank(name: str) -> tuple[bool, pd.Timestamp]:
        return not TIME_NAME.search(str(name)), _times(frame[name]).median()

    ranked = sorted(times, key=rank)
    return ranked[0], ranked[1:]


def choose_target(frame: pd.DataFrame, wanted: str | None, time: str) -> tuple[str, list[str]]:
    """The column to predict (two values) and the other columns that could be."""

    def values(name: str) -> int:
        return int(frame[name].nunique(dropna=True))

    if wanted is not None:
        if wanted not in frame.columns:
            raise DraftError(f"--target-column {wanted}: no such column; the columns are {', '.join(frame.columns)}")
        if values(wanted) != 2:
            raise DraftError(not_binary(frame, wanted))
        return wanted, []
    binary = [name for name in frame.columns if name != time and values(name) == 2]
    if not binary:
        named = [name for name in frame.columns if name != time and TARGET_NAME.search(str(name))]
        if named:
            raise DraftError(not_binary(frame, named[-1]) + "; or name a column with --target-column")
        raise DraftError(
            "no target column found: no column holds exactly two values (yes/no, 0/1, two labels). "
            "The model predicts the probability of an event: add a column of 1 where it happened "
            "and 0 where not, and name it with --target-column"
        )
    position = {name: index for index, name in enumerate(frame.columns)}

    # A target's name first, then a value that names an event (Charged Off, yes, 1), a flag's name,
    # 0/1 values, and the later column (a target often comes last).
    def rank(name: str) -> tuple[bool, bool, bool, bool, int]:
        return (
            not TARGET_NAME.search(str(name)),
            not any(POSITIVE_VALUE.match(str(value).strip()) for value in frame[name].dropna().unique()),
            not FLAG_NAME.search(str(name)),
            not _zero_one(frame[name]),
            -position[name],
        )

    ranked = sorted(binary, key=rank)
    return ranked[0], [name for name in ranked[1:]]


def not_binary(frame: pd.DataFrame, name: str) -> str:
    count = int(frame[name].nunique(dropna=True))
    return (
        f"target column {name} is not binary: it holds {count} distinct value{'s' * (count != 1)}"
        f"{' (' + examples(frame[name], 4) + ')' if count else ''}. The model predicts the probability of a "
        f"yes/no event: give the CSV a column of two values (e.g. 1 where {name} is the outcome to warn about, "
        "0 elsewhere)"
    )


def _zero_one(values: pd.Series) -> bool:
    present = set(values.dropna().tolist())
    return present <= {0, 1}  # True and False are 1 and 0


def choose_positive(values: pd.Series, wanted: str | None) -> tuple[str | None, str]:
    """The value counted as 1 (None for 0/1 and true/false) and a note on the choice."""
    counts = values.value_counts(normalize=True)
    shares = ", ".join(f"{value!s} {share:.1%}" for value, share in counts.items())
    if wanted is not None:
        if wanted not in set(values.dropna().astype(str)):
            raise DraftError(f"--positive {wanted}: not a value of the target column (it holds {shares})")
        return wanted, f"{shares}; 1 = {wanted}"
    if _zero_one(values):
        return None, shares
    labels = [str(value) for value in counts.index]
    named = [label for label in labels if POSITIVE_VALUE.match(label.strip())]
    positive = named[0] if len(named) == 1 else labels[-1]
    why = "its name" if len(named) == 1 else "the rarer value"
    return positive, f"{shares}; 1 = {positive} ({why}: change data.csv.positive if the event is the other)"


def leave_out_reason(values: pd.Series, name: str) -> str | None:
    """Why a column is no feature, or None."""
    present = values.dropna()
    if present.empty:
        return "empty: no value in any row"
    distinct = int(present.nunique())
    if distinct == 1:
        return f"one value only ({present.iloc[0]!s}): nothing to learn from"
    unique_share = distinct / len(present)
    textual = pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)
    if textual and distinct > MAX_CATEGORIES and sample(present).astype(str).str.contains(" ").mean() > 0.5:
        return f"free text: {distinct:,} distinct texts in {len(present):,} rows, too many to learn as categories"
    integral = pd.api.types.is_integer_dtype(values)
    if (
        (textual or integral)
        and len(present) > 20
        and (
            unique_share >= ID_SHARE
            or (ID_NAME.search(str(name)) and unique_share >= 0.5)
            or (integral and present.is_monotonic_increasing and unique_share > 0.9)
        )
    ):
        return f"looks like an identifier: {distinct:,} distinct values in {len(present):,} rows"
    if textual and distinct > MAX_CATEGORIES:
        numbers = _numbers_in_text(present)
        if numbers:
            return f"numbers written with text around them (e.g. {numbers}): strip it in the CSV to use them as numbers"
        return f"{distinct:,} distinct texts: too many to learn as categories (free text?)"
    return None


def _numbers_in_text(present: pd.Series) -> str:
    texts = sample(present, 200).astype(str)
    if texts.str.match(NUMBER_IN_TEXT).mean() >= TIME_SHARE:
        return ", ".join(repr(text) for text in texts.head(2))
    return ""


def numeric_bounds(present: pd.Series, integer: bool) -> tuple[float, float]:
    """The observed range widened by a tenth of itself each way (not below 0 for data that never
    is): training values outside become missing and requests outside get a 400."""
    low, high = float(present.min()), float(present.max())
    margin = 0.1 * ((high - low) or abs(high) or 1.0)
    lower, upper = low - margin, high + margin
    if low >= 0:
        lower = max(0.0, lower)
    if integer:
        return float(math.floor(lower)), float(math.ceil(upper))
    return _round_out(lower, down=True), _round_out(upper, down=False)


def _round_out(value: float, down: bool) -> float:
    """`value` rounded outward to 3 significant digits."""
    if value == 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(abs(value))) - 2)
    rounded = (math.floor if down else math.ceil)(value / step) * step
    return float(f"{rounded:.10g}")


def worst_missing(values: pd.Series, batches: pd.Series) -> float:
    return float(values.isna().groupby(batches).mean().max())


def choose_batch(times: pd.Series, min_rows: int, column: str) -> str:
    """The quality batch: a calendar month when every month holds at least min_rows rows (and there
    are three), else the finest of week, quarter, year that does."""
    for batch in BATCHES:
        counts = times.dt.to_period(batch).value_counts()
        if counts.min() >= min_rows and (batch != "M" or len(counts) >= 3):
            return batch
    raise DraftError(
        f"{len(times):,} rows with a time in {column}: too few for the quality checks, which need "
        f"at least quality.min_rows = {min_rows} rows in every batch (even per year); collect more, or "
        "lower quality.min_rows in the drafted file"
    )


def time_bounds(times: pd.Series) -> tuple[dict[str, str], dict[str, str], str]:
    """Window and split: the first rows train, the next validate, the newest test."""
    ordered = times.sort_values(ignore_index=True)
    first, last = ordered.iloc[0], ordered.iloc[-1]
    daily = (last - first) >= pd.Timedelta(days=60)
    unit: Literal["D", "min"] = "D" if daily else "min"
    text = "%Y-%m-%d" if daily else "%Y-%m-%d %H:%M"
    start = first.floor(unit)
    end = last.floor(unit) + pd.Timedelta(1, unit)
    valid = ordered.iloc[int(len(ordered) * TRAIN_SHARE)].floor(unit)
    test = ordered.iloc[int(len(ordered) * (TRAIN_SHARE + VALID_SHARE))].floor(unit)
    bounds = [start, max(valid, start + pd.Timedelta(1, unit))]
    bounds.append(max(test, bounds[1] + pd.Timedelta(1, unit)))
    if bounds[2] >= end:
        raise DraftError(
            f"the time column spans {first} to {last}: too short to train, validate and test on "
            "parts of it one after the other"
        )
    window = {"start": start.strftime(text), "end": end.strftime(text)}
    split = {"valid_start": bounds[1].strftime(text), "test_start": bounds[2].strftime(text)}
    parts = [
        (ordered < bounds[1]).mean(),
        ((ordered >= bounds[1]) & (ordered < bounds[2])).mean(),
        (ordered >= bounds[2]).mean(),
    ]
    note = f"{parts[0]:.0%} of the rows train, {parts[1]:.0%} validate, the newest {parts[2]:.0%} test"
    return window, split, note


def draft(
    csv: Path,
    time_column: str | None = None,
    target_column: str | None = None,
    positive: str | None = None,
    config: Path = DEFAULT_CONFIG,
) -> Draft:
    """Every choice for the CSV, from its values."""
    try:
        frame = pd.read_csv(csv, low_memory=False)
    except (OSError, ValueError) as error:
        raise DraftError(f"{csv}: cannot be read as a CSV ({error})") from error
    if frame.empty or len(frame.columns) < 3:
        raise DraftError(
            f"{csv}: {len(frame)} rows of {len(frame.columns)} columns; a time, a target and at "
            "least one feature column with rows under them are needed"
        )
    time, other_times = choose_time(frame, time_column)
    target, other_targets = choose_target(frame, target_column, time)
    if frame[target].isna().any():
        raise DraftError(
            f"target column {target}: {int(frame[target].isna().sum()):,} rows have no value; "
            "drop them from the CSV (every training row needs its outcome)"
        )
    chosen_positive, target_note = choose_positive(frame[target], positive)
    times = _times(frame[time])
    if times.isna().any():
        bad = frame.loc[times.isna() & frame[time].notna(), time]
        if len(bad):
            raise DraftError(
                f"time column {time}: {len(bad):,} values do not read as times (e.g. {bad.iloc[0]!r}); "
                "fix or drop those rows"
            )
    base = load_settings(config)
    window, split, split_note = time_bounds(times.dropna())
    result = Draft(
        csv=Path(csv),
        rows=len(frame),
        columns=len(frame.columns),
        time=time,
        target=target,
        positive=chosen_positive,
        target_note=target_note,
        other_targets=other_targets,
        window=window,
        split=split,
        split_note=split_note,
        batch=choose_batch(times.dropna(), base.quality.min_rows, time),
    )
    batches = times.dt.to_period(result.batch)
    train_rows = int(len(frame) * TRAIN_SHARE)
    result.batch_size = int(min(base.train.batch_size, max(64, 2 ** int(math.log2(max(train_rows // 20, 1))))))
    for name in frame.columns:
        if name in (time, target):
            continue
        values = frame[name]
        if name in other_times:
            result.left_out[name] = (
                f"a second column of dates ({time} is the time column): derive numbers "
                "from it in the CSV (e.g. days since) to use it"
            )
            continue
        reason = leave_out_reason(values, name)
        if reason:
            result.left_out[name] = reason
            continue
        present = values.dropna()
        missing = float(values.isna().mean())
        spec: dict[str, Any] = {"required": missing == 0}
        worst = worst_missing(values, batches)
        if worst > base.quality.max_missing:
            spec["max_missing"] = min(1.0, math.ceil((worst + 0.05) * 100) / 100)
        missing_note = (
            f"{missing:.1%} missing" + (f", {worst:.0%} in the worst batch" if worst > missing else "")
            if missing
            else "none missing"
        )
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            numbers = present.astype("float64")
            integer = bool((numbers % 1 == 0).all())
            low, high = numeric_bounds(numbers, integer)
            result.numeric[name] = {
                "required": spec.pop("required"),
                "min": low,
                "max": high,
                **({"integer": True} if integer else {}),
                **spec,
            }
            result.notes[name] = f"observed {_number(numbers.min())} .. {_number(numbers.max())}, {missing_note}"
        else:
            result.categorical[name] = spec
            distinct = int(present.nunique())
            in_text = _numbers_in_text(present)
            result.notes[name] = (
                f"{distinct} values: {examples(values)}{', ...' if distinct > 3 else ''}; "
                f"{missing_note}"
                + (
                    f"; numbers with text (e.g. {in_text}): strip it in the CSV to use them as numbers"
                    if in_text
                    else ""
                )
            )
    if not result.categorical and not result.numeric:
        raise DraftError(
            f"{csv}: no column is left to learn from besides {time} and {target} "
            f"(left out: {'; '.join(f'{k}: {v}' for k, v in result.left_out.items())})"
        )
    return result


def _number(value: float) -> str:
    return f"{value:.6g}"


def _scalar(value: Any) -> str:
    """A YAML scalar; strings quoted as JSON (a subset of YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value) if isinstance(value, str) else str(value)


def _flow(mapping: dict[str, Any]) -> str:
    """A one-line YAML mapping."""
    return "{" + ", ".join(f"{key}: {_scalar(value)}" for key, value in mapping.items()) + "}"


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else json.dumps(name)


def _comment(text: str) -> str:
    return text.replace("\n", " ")


def model_name(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    if not cleaned or not cleaned[0].isalpha():
        raise DraftError(
            f"model name {name!r}: give one that starts with a letter (letters, digits, _), e.g. with --name loans"
        )
    return cleaned


def output_name(name: str) -> str:
    """The model's name, which also names its output folders: never one of the default pipeline's."""
    cleaned = model_name(name)
    taken = {
        part
        for path in load_settings(DEFAULT_CONFIG).paths.model_dump().values()
        for part in Path(os.path.relpath(path, ROOT)).parts
    }
    if cleaned in taken:
        raise DraftError(
            f"name {cleaned!r} is also a folder of the default pipeline's outputs, which the model's "
            "would then overlap: choose another, e.g. with --name"
        )
    return cleaned


def render(result: Draft, name: str, out: Path, config: Path = DEFAULT_CONFIG) -> str:
    """The commented params file."""
    out_dir = Path(os.path.abspath(out)).parent
    config = Path(config).resolve()
    base = os.path.relpath(config, out_dir) if out_dir.is_relative_to(ROOT) else str(config)
    csv = Path(os.path.abspath(result.csv))
    csv_text = csv.relative_to(ROOT).as_posix() if csv.is_relative_to(ROOT) else str(csv)
    # The answers' names: the event itself when the target is a label (charged_off_probability).
    label = result.positive if result.positive and re.search(r"[A-Za-z]{4}", result.positive) else None
    target = model_name(label if label and label.lower() not in ("true", "yes", "positive") else result.target)
    paths = {
        "raw": f"data/{name}/table.parquet",
        "processed": f"data/{name}/processed/table.parquet",
        **{
            key: f"artifacts/{name}/{value}"
            for key, value in {
                "quality": "quality.parquet",
                "quality_db": "quality.sqlite",
                "model_dir": "model",
                "export_dir": "export",
                "metrics": "metrics.json",
                "comparison": "comparison.json",
                "model_store": "model-store",
                "registry": "registry",
                "plots": "plots",
                "tracking": "mlflow",
            }.items()
        },
        "report_dir": f"reports/{name}",
    }
    lines = [
        f"# Drafted from {csv_text} ({result.rows:,} rows, {result.columns} columns) by",
        f"#   python -m model.data.draft_config --csv {csv_text} --out {out}",
        "# Check every choice below against what you know of the data and edit what is wrong, then",
        f"#   make run CONFIG={out}",
        "# Above all, delete every feature known only after the moment you predict for (a delay, a",
        "# payment, a closing date): the draft cannot tell, and the model would learn the answer.",
        "# It starts from params.yaml: sections here replace only what differs (features whole).",
        f"base: {base}",
        "",
        "# Everything lands beside, never on, the default pipeline's outputs.",
        "paths:",
        *(f"  {key}: {value}" for key, value in paths.items()),
        "",
        "data:",
        "  source: csv",
        f"  target: {target}" + " " * max(1, 22 - len(target)) + f"# answers carry {target}_probability and {target}",
        "  csv:",
        f"    path: {_scalar(csv_text)}",
        f"    time_column: {_scalar(result.time)}  # when each row happened",
        f"    target_column: {_scalar(result.target)}  # {_comment(result.target_note)}",
    ]
    if result.positive is not None:
        lines.append(f"    positive: {_scalar(result.positive)}  # the value that counts as 1")
    lines += [
        f"  window: {_flow(result.window)}  # the time column's first day to the day after its last",
        f"  split: {_flow(result.split)}  # {result.split_note}",
        f"  batch: {result.batch}"
        + "                  # data quality is measured per "
        + {"M": "calendar month", "W": "week", "Q": "quarter", "Y": "year"}[result.batch],
        "",
        "model:",
        f"  name: {name}" + " " * max(1, 24 - len(name)) + f"# served at /predictions/{name}",
        "",
        "train:",
        f"  batch_size: {result.batch_size}" + "          # about 20 steps per epoch at least",
        "",
        "# The feature contract and the request schema: a numeric min/max is the observed range widened",
        "# by a tenth (training values outside become missing, requests outside get a 400); required",
        "# where no row misses the value. Order matters: it is the input order of model.pt.",
        "features:",
        "  categorical:" + ("" if result.categorical else " {}"),
        *(
            f"    {_key(key)}: {_flow(spec)}  # {_comment(result.notes[key])}"
            for key, spec in result.categorical.items()
        ),
        "  numeric:" + ("" if result.numeric else " {}"),
        *(f"    {_key(key)}: {_flow(spec)}  # {_comment(result.notes[key])}" for key, spec in result.numeric.items()),
    ]
    if result.left_out:
        lines += ["", "# Left out (move one into features by hand if it should be one):"]
        lines += [f"#   {key}: {_comment(reason)}" for key, reason in result.left_out.items()]
    return "\n".join(lines) + "\n"


def write_draft(
    csv: Path,
    out: Path,
    name: str | None = None,
    time_column: str | None = None,
    target_column: str | None = None,
    positive: str | None = None,
    force: bool = False,
) -> Draft:
    """Draft, write and read back the params file (a file that does not load is never left behind)."""
    out = Path(out)
    if out.exists() and not force:
        raise DraftError(f"{out} exists: edit it, or pass --force to draft it again over your edits")
    name = output_name(name or out.stem)
    result = draft(Path(csv), time_column, target_column, positive)
    text = render(result, name, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    try:
        settings = load_settings(out)
    except Exception:
        out.unlink()
        raise
    result.problems = problems(measure(load_source(settings), settings), settings)
    return result


def summary(result: Draft, out: Path) -> str:
    lines = [
        f"wrote {out}: {len(result.categorical)} categorical and {len(result.numeric)} numeric features from "
        f"{result.csv} ({result.rows:,} rows, {result.columns} columns)",
        f"  time column:   {result.time} ({result.window['start']} .. {result.window['end']}; {result.split_note})",
        f"  target column: {result.target} ({result.target_note})",
    ]
    if result.other_targets:
        lines.append(
            "  other columns of two values (--target-column to predict one): " + ", ".join(result.other_targets)
        )
    lines += [f"  left out:      {name}: {reason}" for name, reason in result.left_out.items()]
    lines += [f"  quality check: {problem}" for problem in result.problems]
    lines.append(
        "check it, edit what is wrong (above all features known only after the moment you predict "
        f"for), then: make run CONFIG={out}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", required=True, type=Path, help="the CSV, one row per event with its outcome")
    parser.add_argument("--out", required=True, type=Path, help="the params file to write, e.g. configs/loans.yaml")
    parser.add_argument("--name", help="the model's name, served at /predictions/<name> (default: the file's name)")
    parser.add_argument("--time-column", help="the column of when each row happened (default: found from the values)")
    parser.add_argument("--target-column", help="the column of two values to predict (default: found)")
    parser.add_argument("--positive", help="the target's value that counts as 1 (default: its name, else the rarer)")
    parser.add_argument("--force", action="store_true", help="write over an existing file")
    args = parser.parse_args(argv)
    try:
        result = write_draft(
            args.csv, args.out, args.name, args.time_column, args.target_column, args.positive, args.force
        )
    except DraftError as error:
        print(f"draft_config: {error}", file=sys.stderr)
        return 2
    print(summary(result, args.out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
