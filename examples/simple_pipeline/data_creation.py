"""Step 1, data creation: synthetic daily weather at four stations with a storm alert to predict,
with noise, missing readings and anomalies (fault codes and stuck sensors), written as monthly
CSVs into <work>/data/train/ and <work>/data/test/.

    python examples/simple_pipeline/data_creation.py [--work-dir DIR]

Uses model.data.synthetic.write_synthetic with configs/synthetic.yaml (data.synthetic).
"""

from __future__ import annotations

import pandas as pd
from workspace import step_printer, step_start

from model.data.synthetic import FAULT_CODES, READINGS, write_synthetic

say = step_printer("1/4 data creation")


def main() -> None:
    _, settings = step_start(__doc__)
    source = settings.data.synthetic
    say(
        f"{source.days} days x {source.stations} stations from {source.start}, noise {source.noise} °C, "
        f"{source.missing_rate:.0%} missing, {source.anomaly_rate:.0%} anomalies, test from {source.test_start}"
    )
    written = write_synthetic(settings)
    for part in ("train", "test"):
        files = sorted((source.dir / part).glob("*.csv"))
        readings = pd.concat([pd.read_csv(path) for path in files])[list(READINGS)]
        say(
            f"{part}/: {len(files)} CSV files, {len(readings)} rows, {int(readings.isna().to_numpy().sum())} "
            f"missing readings, {int(readings.isin(FAULT_CODES).to_numpy().sum())} fault codes {FAULT_CODES}"
        )
    say(f"wrote {len(written)} files under {source.dir}")


if __name__ == "__main__":
    main()
