"""The image's recipe stays consistent with the project (no Docker engine needed):
lint passes, what it copies exists and survives the ignore file, ports and pins agree."""

import fnmatch
import re
import subprocess

import pytest

from model.config import ROOT, load_settings

DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
IGNORE = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().split("\n")
PROPERTIES = dict(line.split("=", 1) for line in (ROOT / "config.properties").read_text().splitlines()
                  if line and not line.startswith("#"))
REQUIREMENTS = (ROOT / "requirements.txt").read_text()


def allowlisted():
    """What the ignore file lets into the build context (the stages copy the context whole)."""
    return [line.strip()[1:] for line in IGNORE if line.strip().startswith("!")]


def read_by_the_build():
    """Repository files the build's RUN steps name, relative to the copied context."""
    code = re.sub(r"\\\n\s*", " ", "\n".join(line for line in DOCKERFILE.splitlines() if not line.startswith("#")))
    runs = " ".join(line for line in code.splitlines() if line.startswith("RUN "))
    return sorted({token for token in re.findall(r"[\w./-]+", runs) if (ROOT / token).is_file()})


def allowed_by_ignore_file(path):
    allowed = False
    for pattern in (p.strip() for p in IGNORE if p.strip() and not p.startswith("#")):
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path.rstrip("/"), pattern) or path.startswith(pattern + "/"):
            allowed = negated
    return allowed


@pytest.mark.slow  # the whole `make lint`: ruff, the type checker, vermin, hadolint
def test_make_lint_passes():
    result = subprocess.run(["make", "lint"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_context_is_copied_whole_and_everything_it_holds_exists():
    assert re.search(r"^COPY \. \./$", DOCKERFILE, re.M)
    model_dir = load_settings().paths.model_dir.relative_to(ROOT)
    for source in allowlisted():
        if source.rstrip("/") == str(model_dir):
            continue  # written by `make train`, which docs/docker-and-kubernetes.md puts before `docker build`
        assert (ROOT / source).exists(), source


def test_every_file_the_build_runs_passes_the_ignore_file():
    used = read_by_the_build()
    assert {"requirements.txt", "docker/selfcheck.py", "docker/entrypoint.sh", "sample_input.json"} <= set(used)
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
    configured = {PROPERTIES[key].rsplit(":", 1)[1] for key in
                  ("inference_address", "management_address", "metrics_address", "oip_address")}
    assert exposed == configured == {"8080", "8081", "8082", "8083"}


def test_base_image_is_the_pinned_torchserve_release():
    base = re.search(r"^ARG TORCHSERVE_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)
    release = re.search(r"^torchserve==(\S+)$", REQUIREMENTS, re.M).group(1)
    assert base == f"pytorch/torchserve:{release}-cpu"


def test_every_pin_the_image_greps_for_is_in_requirements():
    for group in re.findall(r"grep -E '\^\(([^)]+)\)=='", DOCKERFILE):
        for name in group.split("|"):
            assert re.search(rf"^{name}==\S+$", REQUIREMENTS, re.M), name


def test_security_defaults():
    assert PROPERTIES["management_address"].startswith("http://127.0.0.1:")
    # registry versions are registered by file name from the store; no URL is ever allowed
    assert PROPERTIES["allowed_urls"] == "(?!)"
    assert PROPERTIES["metrics_mode"] == "prometheus"
    assert int(PROPERTIES["max_request_size"]) <= 1 << 20
    assert "USER model-server" in DOCKERFILE.split("FROM ")[-1]
    assert "HEALTHCHECK" in DOCKERFILE
