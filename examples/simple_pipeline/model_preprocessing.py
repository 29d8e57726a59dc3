"""Step 2, preprocessing: read the CSVs of step 1, check the data quality per month (missing
values, values out of bounds, duplicates, size), clean (fault codes become missing values) and
split by time into train / valid / test; writes <work>/processed.parquet.

    python examples/simple_pipeline/model_preprocessing.py [--work-dir DIR]

Uses model.data.prepare: ingest (source -> raw table) then validate (quality checks with
model.data.quality, cleaning, time split with model.data.split). A month over a quality limit
stops here with the reason.
"""

from __future__ import annotations

from workspace import step_printer, step_start

from model.data.prepare import ingest, validate
from model.data.sources import TARGET
from model.data.split import SPLIT, SPLITS

say = step_printer("2/4 preprocessing")


def main() -> None:
    _, settings = step_start(__doc__)
    raw = ingest(settings)
    features = settings.features.names
    say(f"raw table: {len(raw)} rows, {int(raw[features].isna().to_numpy().sum())} missing values")
    table = validate(settings)
    say(
        f"checked and cleaned: {int(table[features].isna().to_numpy().sum())} missing values "
        f"(fault codes set missing; the model imputes them)"
    )
    for name in SPLITS:
        rows = table[table[SPLIT] == name]
        say(f"{name}: {len(rows)} rows, {rows[TARGET].mean():.1%} {settings.data.target}")
    say(f"wrote {settings.paths.processed}")


if __name__ == "__main__":
    main()
