"""mymodel-offline as docs/docker-and-kubernetes.md runs it: a folder mounted at /data, a CSV or Parquet file in,
scored rows out, with the answers `python -m model.artifact.predict` gives natively for the same weights."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from harness import container
from loadtest.payloads import real_records
from model.artifact.predict import load_served_model, predict_frame
from model.base.tables import read_table
from model.data.prepare import load_table
from tests.image import documented


def score_in_the_image(folder, input_name: str, output_name: str) -> None:
    """docker run --rm --user "$(id -u):$(id -g)" -v "$PWD":/data mymodel-offline --input_path ... --output_path ..."""
    result = container.run_engine(
        "run",
        "--rm",
        f"--user={os.getuid()}:{os.getgid()}",
        f"--volume={folder}:/data",
        container.OFFLINE_IMAGE,
        "--input_path",
        f"/data/{input_name}",
        "--output_path",
        f"/data/{output_name}",
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def flights(engine, pipeline) -> pd.DataFrame:
    """Real test-month flights, a row with nothing, and a row of nonsense."""
    records = real_records(load_table(pipeline), pipeline.features, 200, seed=11)
    sample = json.loads((container.ROOT / "sample_input.json").read_text())
    nonsense = {**sample, "carrier": "ZZ", "month": 13, "distance": "far"}
    return pd.DataFrame([*records, {}, nonsense]).assign(row_id=lambda frame: range(len(frame)))


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_the_offline_image_scores_a_file_as_the_native_scorer_does(flights, pipeline, tmp_path, suffix, write_report):
    given = flights.astype(str).replace({"nan": None}) if suffix == "parquet" else flights
    path = tmp_path / f"flights.{suffix}"
    given.to_parquet(path, index=False) if suffix == "parquet" else given.to_csv(path, index=False)
    tmp_path.chmod(0o777)
    score_in_the_image(tmp_path, path.name, f"scored.{suffix}")
    scored = read_table(tmp_path / f"scored.{suffix}")
    model, schema = load_served_model(pipeline.paths.export_dir)
    native = predict_frame(model, schema, read_table(path))
    assert scored["row_id"].tolist() == native["row_id"].tolist()
    column = f"{schema['x-model']['target']}_probability"
    difference = float(np.abs(scored[column].astype(float) - native[column].astype(float)).max())
    assert difference <= 1e-6
    assert (scored["model_version"] == schema["x-model"]["version"]).all()
    write_report(
        f"offline_{suffix}",
        {
            "rows": len(scored),
            "max_abs_difference": difference,
            "image_mb": round(container.image_size_mb(container.OFFLINE_IMAGE)),
        },
    )


def test_the_documented_offline_commands_score_a_file_in_the_current_directory(flights, pipeline, tmp_path):
    """docs/docker-and-kubernetes.md's two `docker run` lines as they stand, in a folder holding flights.csv."""
    block = documented.block_with(documented.DOCKER_PAGE, "docker run --rm -v")
    flights.to_csv(tmp_path / "flights.csv", index=False)
    tmp_path.chmod(0o777)  # the first line runs as the image's uid 1000
    done, _ = documented.run(block, tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    model, schema = load_served_model(pipeline.paths.export_dir)
    native = predict_frame(model, schema, read_table(tmp_path / "flights.csv"))
    column = f"{schema['x-model']['target']}_probability"
    for name in ("scored.parquet", "scored.csv"):
        scored = read_table(tmp_path / name)
        assert scored["row_id"].tolist() == native["row_id"].tolist(), name
        assert float(np.abs(scored[column].astype(float) - native[column].astype(float)).max()) <= 1e-6, name


def test_the_offline_image_is_under_one_gigabyte(engine):
    assert container.image_size_mb(container.OFFLINE_IMAGE) < 1000


# Each path: written by the image's user? (a directory: a new file in it; a file: appended to)
WRITE_PROBE = (
    'for p in "$@"; do test -e "$p" || { echo "missing $p"; continue; }; '
    'if [ -d "$p" ]; then touch "$p/x" 2>/dev/null && echo "wrote $p"; '
    'else (: >> "$p") 2>/dev/null && echo "wrote $p"; fi; done; true'
)


def test_the_scoring_user_cannot_write_code_config_model_or_venv(engine, pipeline):
    export = f"/app/{pipeline.paths.export_dir.relative_to(container.ROOT)}"
    site = container.run_engine(
        "run",
        "--rm",
        "--entrypoint=python",
        container.OFFLINE_IMAGE,
        "-c",
        "import sysconfig; print(sysconfig.get_path('purelib'))",
    ).stdout.strip()
    protected = [
        "/app",
        "/app/model",
        "/app/model/artifact/predict.py",
        "/app/params.yaml",
        export,
        f"{export}/model.pt",
        "/opt/venv",
        "/opt/venv/bin",
        site,
        f"{site}/torch",
        f"{site}/torch/__init__.py",
    ]
    probed = container.run_engine(
        "run", "--rm", "--entrypoint=sh", container.OFFLINE_IMAGE, "-c", WRITE_PROBE, "sh", *protected
    )
    assert probed.stdout.split("\n") == [""], probed.stdout
