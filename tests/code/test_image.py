"""The image's recipe stays consistent with the project (no Docker engine needed): lint passes,
what it copies exists and survives the ignore file, it trains as the pipeline does, ports agree,
and every install is the hashed lock's."""

import fnmatch
import re
import subprocess

import pytest
import yaml

from model.config import ROOT, load_settings

DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
OFFLINE_DOCKERFILE = (ROOT / "docker" / "Dockerfile.offline").read_text()
IGNORE = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().split("\n")
PROPERTIES = dict(
    line.split("=", 1)
    for line in (ROOT / "config.properties").read_text().splitlines()
    if line and not line.startswith("#")
)
REQUIREMENTS = (ROOT / "requirements.txt").read_text()


def allowlisted():
    """What the ignore file lets into the build context (the stages copy the context whole)."""
    return [line.strip()[1:] for line in IGNORE if line.strip().startswith("!")]


def read_by_the_build():
    """Repository files the build's RUN steps name, relative to the copied context."""
    code = re.sub(r"\\\n\s*", " ", "\n".join(line for line in DOCKERFILE.splitlines() if not line.startswith("#")))
    runs = " ".join(line for line in code.splitlines() if line.startswith("RUN "))
    tokens = re.findall(r"[\w./-]+", runs)
    return sorted({token for token in tokens if not token.startswith("/") and (ROOT / token).is_file()})


def allowed_by_ignore_file(path, ignore=IGNORE):
    allowed = False
    for pattern in (p.strip() for p in ignore if p.strip() and not p.startswith("#")):
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path.rstrip("/"), pattern) or path.startswith(pattern + "/"):
            allowed = negated
    return allowed


@pytest.mark.slow  # the whole `make lint`: ruff, the type checker, vermin, hadolint
def test_make_lint_passes():
    # a fresh clone type-checks from an empty cache: a minute or two of mypy alone
    result = subprocess.run(["make", "lint"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_context_is_copied_whole_and_everything_it_holds_exists():
    assert re.search(r"^COPY \. \./$", DOCKERFILE, re.M)
    for source in allowlisted():
        assert (ROOT / source).exists(), source


def test_the_context_never_holds_a_trained_model_or_build_output():
    """A clean checkout builds the image: nothing `make train` or `make archive` writes is read."""
    paths = load_settings().paths
    for written in (paths.model_dir, paths.export_dir, paths.metrics, paths.model_store, paths.processed):
        for ignore in ("Dockerfile.dockerignore", "Dockerfile.offline.dockerignore"):
            patterns = (ROOT / "docker" / ignore).read_text().split("\n")
            assert not allowed_by_ignore_file(str(written.relative_to(ROOT)) + "/x", patterns), (ignore, written)


def training_stage(dockerfile: str) -> str:
    stage = dockerfile[dockerfile.index("FROM ${PYTHON_IMAGE} AS train") :]
    return re.split(r"\n(?:FROM |# --- )", stage, maxsplit=1)[0]


def test_both_images_train_with_the_same_stage_so_a_build_of_both_trains_once():
    assert training_stage(DOCKERFILE) == training_stage(OFFLINE_DOCKERFILE)
    assert "COPY --from=train /build/artifacts/model/ artifacts/model/" in DOCKERFILE
    assert "COPY --from=train /build/artifacts/model/ artifacts/model/" in OFFLINE_DOCKERFILE


def test_the_training_stage_runs_the_pipelines_own_commands():
    """dvc.yaml's prepare, validate and train commands, with the image's python and no MLflow run."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    expected = [stages[name]["cmd"].replace("${python}", "python") for name in ("prepare", "validate", "train")]
    expected[-1] += " --no-tracking"
    code = re.sub(r"\\\n\s*", " ", training_stage(DOCKERFILE))
    (run,) = [line[4:] for line in code.splitlines() if line.startswith("RUN python -m model.")]
    assert [command.strip() for command in run.split(" && ")] == expected
    assert str(load_settings().paths.model_dir.relative_to(ROOT)) == "artifacts/model"


def test_the_training_stage_copies_the_training_code_and_nothing_after_it():
    """Exactly what training imports (its closure, by the layering's own graph) is copied into the
    training stage, so a change to the export, the archive or the scorer does not retrain."""
    from model.layers import closure

    code = re.sub(r"\\\n\s*", " ", training_stage(DOCKERFILE))
    copied = [
        source.rstrip("/")
        for line in code.splitlines()
        if line.startswith("COPY model/")
        for source in line.split()[1:-1]
    ]
    trained_by = [str(path) for path in closure(["model.data.prepare", "model.training.train"])]
    assert trained_by and all(
        any(path == source or path.startswith(source + "/") for source in copied) for path in trained_by
    ), (copied, trained_by)
    layers_copied = {source.split("/")[1] for source in copied if "/" in source and not source.endswith(".py")}
    assert layers_copied == {path.split("/")[1] for path in trained_by if path.count("/") == 2}


def test_every_file_the_build_runs_passes_the_ignore_file():
    used = read_by_the_build()
    assert {"docker/serve.lock", "docker/selfcheck.py", "docker/entrypoint.sh", "sample_input.json"} <= set(used)
    for path in used:
        assert allowed_by_ignore_file(path), f"{path} is excluded by Dockerfile.dockerignore"


def test_the_image_packs_the_same_handler_files_as_make_archive():
    from model.artifact.archive import HANDLER, HANDLER_MODULES

    archive_source = (ROOT / "model" / "artifact" / "archive.py").read_text()
    names = {HANDLER, *HANDLER_MODULES, *re.findall(r'handler_dir / "([^"]+)"', archive_source)}
    assert len(names) > 1 + len(HANDLER_MODULES)  # the config file as well as the modules
    for name in names:
        assert allowed_by_ignore_file(f"handler/{name}"), name


def test_exposed_ports_are_the_configured_ones():
    exposed = set(re.search(r"^EXPOSE (.+)$", DOCKERFILE, re.M).group(1).split())
    configured = {
        PROPERTIES[key].rsplit(":", 1)[1]
        for key in ("inference_address", "management_address", "metrics_address", "oip_address")
    }
    assert exposed == configured == {"8080", "8081", "8082", "8083"}


def test_base_image_is_the_pinned_torchserve_release():
    base = re.search(r"^ARG TORCHSERVE_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)
    release = re.search(r"^torchserve==(\S+)$", REQUIREMENTS, re.M).group(1)
    assert base == f"pytorch/torchserve:{release}-cpu"


def test_every_install_in_the_images_is_a_hashed_lock():
    """Each pip install reads a lock with --require-hashes, and nothing else (no loose names)."""
    installs = [
        match.strip()
        for text in (DOCKERFILE, OFFLINE_DOCKERFILE)
        for match in re.findall(
            r"pip install ([^&\n]+)",
            re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.startswith("#"))),
        )
    ]
    # the training stage (in both), the serving image's two stages, the offline image's
    assert len(installs) == 5, installs
    for install in installs:
        assert "--require-hashes" in install, install
        options = re.sub(r"\$\{TORCH_INDEX_URL:\+--extra-index-url \"\$TORCH_INDEX_URL\"\}", "", install).split()
        assert [word for word in options if not word.startswith("-")][-1].endswith(".lock"), install
        assert options[-2] == "-r", install


def test_security_defaults():
    assert PROPERTIES["management_address"].startswith("http://127.0.0.1:")
    # registry versions are registered by file name from the store; no URL is ever allowed
    assert PROPERTIES["allowed_urls"] == "(?!)"
    assert PROPERTIES["metrics_mode"] == "prometheus"
    assert int(PROPERTIES["max_request_size"]) <= 1 << 20
    final = DOCKERFILE.split("\nFROM ")[-1]
    (user,) = re.findall(r"^USER (\S+)$", final.split("\nUSER root", 1)[1], re.M)
    assert user not in ("root", "0", "model-server"), "the runtime user must not own the base's venv"
    assert "HEALTHCHECK" in DOCKERFILE
