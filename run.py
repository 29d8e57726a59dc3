"""The model's lifecycle on the batch stream, from the command line (model/lifecycle/).

    python run.py --mode update                      # ingest the next batch(es), retrain if needed: prints True/False
    python run.py --mode inference --file path.csv   # score a file with production: prints the output's path
    python run.py --mode summary                     # quality, drift, versions over time: prints the report's path

--config points at another params file (its `stream` section says where the replay lives).
The answer is the last and only line on stdout; logs, the time and the peak memory of the run
go to stderr, and every run is appended to <stream.dir>/runs.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from model import configure_logging
from model.config import DEFAULT_CONFIG, load_settings


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Everything written to stdout meanwhile (libraries, child processes) goes to stderr, so the
    answer printed afterwards is stdout's only line."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", required=True, choices=["update", "inference", "summary"])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="params file (default: params.yaml)")
    parser.add_argument("--file", type=Path, help="inference: CSV or Parquet of request fields")
    parser.add_argument("--output", type=Path, help="inference: where to write (default: beside --file)")
    parser.add_argument("--batches", type=int, help="update: batches to ingest (default: stream.batches_per_update)")
    args = parser.parse_args()
    if args.mode == "inference" and args.file is None:
        parser.error("--mode inference needs --file path.csv")
    if args.file is not None and not args.file.is_file():
        parser.error(f"--file {args.file}: no such file")
    if args.batches is not None and args.batches < 1:
        parser.error(f"--batches must be at least 1, got {args.batches}")
    configure_logging()
    settings = load_settings(args.config)

    # Imported once the arguments are good: torch takes seconds to import.
    from model.lifecycle.continuous_training import update
    from model.lifecycle.runs import measured
    from model.lifecycle.scoring import score_file
    from model.lifecycle.summary_report import build_summary

    try:
        with stdout_to_stderr(), measured(settings, args.mode) as run:
            if args.mode == "update":
                answer = update(settings, batches=args.batches)
            elif args.mode == "inference":
                answer = score_file(settings, args.file, args.output)
            else:
                answer = build_summary(settings)
            run["result"] = str(answer)
    except (LookupError, ValueError, RuntimeError) as error:
        parser.exit(1, f"error: {error}\n")
    print(answer)


if __name__ == "__main__":
    main()
