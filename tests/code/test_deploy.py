"""The deployment recipes stay valid and in step with the project, with no cluster and no
Docker engine: the offline image and the command it runs, the Kubernetes manifests, the
KServe InferenceService with its TorchServe config, and the CI workflow."""

from __future__ import annotations

import ast
import copy
import fnmatch
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from kubernetes_validate import utils as kubernetes_schemas
from packaging.requirements import Requirement

from harness.torchserve import isolated_env, running
from model.config import ROOT, load_settings
from model.layers import closure
from model.lifecycle.ports import free_ports

BIN = Path(sys.executable).parent
REQUIREMENTS = (ROOT / "requirements.txt").read_text()
K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def read_properties(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


PROPERTIES = read_properties(ROOT / "config.properties")
KSERVE_PROPERTIES = read_properties(KSERVE / "config" / "config.properties")
MODEL_CONFIG = yaml.safe_load((ROOT / "handler" / "model-config.yaml").read_text())


def port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def public_ports() -> set[int]:
    """The ports config.properties binds to every interface (management stays on loopback)."""
    return {port(value) for key, value in PROPERTIES.items() if key.endswith("_address") and "127.0.0.1" not in value}


# --- Dockerfiles ---------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n\s*",
        " ",
        "\n".join(line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


OFFLINE = ROOT / "docker" / "Dockerfile.offline"
OFFLINE_STEPS = instructions(OFFLINE)
OFFLINE_IGNORE = [
    line.strip()
    for line in (ROOT / "docker" / "Dockerfile.offline.dockerignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
OFFLINE_RUN = " ".join(arguments for instruction, arguments in OFFLINE_STEPS if instruction == "RUN")


def entrypoint(steps: list[tuple[str, str]]) -> list[str]:
    return json.loads([arguments for instruction, arguments in steps if instruction == "ENTRYPOINT"][-1])


def context_copies(steps: list[tuple[str, str]]) -> list[str]:
    """Build-context paths the Dockerfile copies (not those from other stages)."""
    return [
        source
        for instruction, arguments in steps
        if instruction == "COPY" and "--from=" not in arguments
        for source in arguments.split()[:-1]
    ]


def passes_ignore_file(path: str, patterns: list[str]) -> bool:
    """Whether the build context keeps `path`: the last matching pattern decides, `!` keeps."""
    kept = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path.rstrip("/"), pattern) or path.startswith(pattern + "/"):
            kept = keep
    return kept


def imported_modules(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "model":
                names |= {
                    f"model.{alias.name}" for alias in node.names if (ROOT / "model" / f"{alias.name}.py").exists()
                }
    return names


def distribution(top_level: str) -> str:
    return normalized(importlib.metadata.packages_distributions()[top_level][0])


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_with(names: set[str]) -> set[str]:
    """The distributions pip installs for `names`: they and their requirements, extras left out."""
    installed, todo = set(), [normalized(name) for name in names]
    while todo:
        name = todo.pop()
        if name in installed:
            continue
        installed.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(normalized(requirement.name))
    return installed


def test_offline_dockerfile_passes_hadolint():
    result = subprocess.run(
        [BIN / "hadolint", "--config", ROOT / "docker" / "hadolint.yaml", OFFLINE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_offline_image_copies_only_what_exists_and_passes_its_ignore_file():
    model_dir = load_settings().paths.model_dir.relative_to(ROOT)
    needed = [str(path) for path in closure(["model.data.prepare", "model.training.train", "model.artifact.predict"])]
    for source in context_copies(OFFLINE_STEPS):
        inside = [path for path in needed if path.startswith(source)] if source.endswith("/") else [source]
        assert inside, f"{source}: nothing the offline build runs"
        for kept in inside:
            assert passes_ignore_file(kept, OFFLINE_IGNORE), f"{kept} is excluded by Dockerfile.offline.dockerignore"
        if source.rstrip("/") != str(model_dir):  # written by `make train`, before `docker build`
            assert (ROOT / source).exists(), source


def test_offline_image_exports_the_saved_weights_where_params_yaml_looks():
    paths = load_settings().paths
    export = re.search(r"python -m model\.artifact\.export --model-dir (\S+) --export-dir (\S+)", OFFLINE_RUN)
    assert export, "the offline image must export model.pt from the saved weights"
    assert (export.group(1), export.group(2)) == (
        str(paths.model_dir.relative_to(ROOT)),
        str(paths.export_dir.relative_to(ROOT)),
    )
    # the weights its own training stage wrote, never a model from the build context
    model_dir = paths.model_dir.relative_to(ROOT)
    assert ("COPY", f"--from=train /build/{model_dir}/ {model_dir}/") in OFFLINE_STEPS
    assert not passes_ignore_file(f"{model_dir}/config.json", OFFLINE_IGNORE)
    assert "params.yaml" in context_copies(OFFLINE_STEPS)


def test_offline_image_runs_the_scorer_as_a_user_on_the_projects_python():
    starts = [index for index, (instruction, _) in enumerate(OFFLINE_STEPS) if instruction == "FROM"]
    final_steps = OFFLINE_STEPS[starts[-1] :]
    assert entrypoint(final_steps) == ["python", "-m", "model.artifact.predict"]
    (user,) = [arguments for instruction, arguments in final_steps if instruction == "USER"]
    assert int(user.split(":")[0]) != 0
    base = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)-slim$", OFFLINE.read_text(), re.M).group(1)
    assert base == f"{sys.version_info.major}.{sys.version_info.minor}"
    # The export lands in the final stage where params.yaml, read from the WORKDIR, points.
    (workdir,) = [arguments for instruction, arguments in final_steps if instruction == "WORKDIR"]
    export_dir = load_settings().paths.export_dir.relative_to(ROOT)
    assert ("COPY", f"--from=build {workdir}/{export_dir} {workdir}/{export_dir}") in final_steps


def test_offline_image_holds_every_module_the_scorer_imports():
    copied = {
        str(path.relative_to(ROOT))
        for source in context_copies(OFFLINE_STEPS)
        for path in ([ROOT / source] if source.endswith(".py") else (ROOT / source).rglob("*.py"))
        if passes_ignore_file(str(path.relative_to(ROOT)), OFFLINE_IGNORE)
    }
    needed = {str(path) for path in closure(["model.artifact.predict"])}
    assert needed <= copied, sorted(needed - copied)


def locked_names(lock: Path) -> set[str]:
    return {normalized(name) for name in re.findall(r"^([A-Za-z0-9][\w.-]*)==", lock.read_text(), re.M)}


@pytest.mark.slow  # loads every module the scorer imports to see what they import in turn
def test_offline_image_installs_every_package_the_scorer_imports():
    lock = ROOT / "docker" / "offline.lock"
    # the lock alone, hashes required, torch without its own requirements (see the Dockerfile)
    assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in OFFLINE_STEPS
    assert re.search(
        r"pip install [^&]*--no-deps --require-hashes\s+\$\{TORCH_INDEX_URL:\+--extra-index-url "
        r"\"\$TORCH_INDEX_URL\"\}\s+-r /tmp/offline\.lock",
        OFFLINE_RUN,
    )
    assert ("COPY", "docker/offline.lock /tmp/offline.lock") in OFFLINE_STEPS
    image = locked_names(lock)
    assert "torch" in image and not {"sympy", "networkx"} & image
    imported = {name for path in closure(["model.artifact.predict"]) for name in imported_modules(ROOT / path, False)}
    third_party = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names | {"model"}}
    # What those modules import when they load (e.g. safetensors.torch imports packaging).
    loaded = set(third_party)
    for name in third_party:
        loaded |= imported_modules(Path(importlib.util.find_spec(name).origin), module_level_only=True)
    needed = {distribution(name.split(".")[0]) for name in loaded if name.split(".")[0] not in sys.stdlib_module_names}
    needed.add(distribution(pd.io.parquet.get_engine("auto").api.__name__))  # Parquet in and out
    # The scorer's --runtime onnx path: the image scores with model.pt and stays under its 1 GB budget
    # without ONNX Runtime (78 MB more); natively the venv has it.
    needed -= {"onnxruntime"}
    assert needed <= image, f"imported by the scorer but not installed in the image: {sorted(needed - image)}"
    # and, but for torch's own requirements, everything they need to import
    assert installed_with(needed - {"torch"}) <= image, sorted(installed_with(needed - {"torch"}) - image)


@pytest.fixture(scope="module")
def scoring_input(schema: dict) -> pd.DataFrame:
    """Rows as users send them: complete, empty, required fields only, and every kind of
    nonsense a file can hold; one optional column missing altogether, one unknown column."""
    facts = schema["x-model"]
    sample = json.loads((ROOT / "sample_input.json").read_text())
    sample = sample[0] if isinstance(sample, list) else sample
    required = list(schema["required"])
    rows = [sample, {}, {name: sample[name] for name in required}]
    anomalies = [("not a number", "ZZ"), ("inf", ""), ("-inf", "12345"), ("1e308", "é" * 500), ("-1", "null")]
    for number, category in anomalies:
        rows.append({**dict.fromkeys(facts["numeric"], number), **dict.fromkeys(facts["categorical"], category)})
    frame = pd.DataFrame(rows).astype("object")
    dropped = next(name for name in reversed(facts["numeric"]) if name not in required)
    return frame.drop(columns=[dropped]).assign(row_id=range(len(frame)), note="an unknown column")


def score(input_path: Path, output_path: Path, export_dir: Path) -> subprocess.CompletedProcess:
    """The offline image's ENTRYPOINT, natively: its interpreter is this one, its WORKDIR the repository."""
    command = entrypoint(OFFLINE_STEPS)
    assert command[0] == "python"
    return subprocess.run(
        [
            sys.executable,
            *command[1:],
            "--input_path",
            str(input_path),
            "--output_path",
            str(output_path),
            "--export_dir",
            str(export_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_scored(scored: pd.DataFrame, given: pd.DataFrame, schema: dict) -> None:
    facts = schema["x-model"]
    probability = scored[f"{facts['target']}_probability"].astype(float)
    assert scored["row_id"].tolist() == given["row_id"].tolist()
    assert set(given.columns) < set(scored.columns)
    assert np.isfinite(probability).all() and probability.between(0, 1).all(), probability.tolist()
    assert (scored[facts["target"]].astype(bool) == (probability >= facts["threshold"])).all()
    assert (scored["model_version"] == facts["version"]).all()


@pytest.fixture(scope="module")
def scored_csv(settings, metrics, schema, scoring_input, tmp_path_factory) -> pd.DataFrame:
    work = tmp_path_factory.mktemp("offline")
    scoring_input.to_csv(work / "flights.csv", index=False)
    result = score(work / "flights.csv", work / "scored.parquet", settings.paths.export_dir)
    assert result.returncode == 0, result.stderr
    return pd.read_parquet(work / "scored.parquet")


def test_offline_entrypoint_scores_a_csv_with_missing_and_anomalous_fields(scored_csv, scoring_input, schema):
    assert_scored(scored_csv, scoring_input, schema)


def test_offline_entrypoint_scores_parquet_as_it_scores_csv(settings, scored_csv, scoring_input, schema, tmp_path):
    scoring_input.astype(str).replace({"nan": None}).to_parquet(tmp_path / "flights.parquet", index=False)
    result = score(tmp_path / "flights.parquet", tmp_path / "scored.csv", settings.paths.export_dir)
    assert result.returncode == 0, result.stderr
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert_scored(scored, scoring_input, schema)
    column = f"{schema['x-model']['target']}_probability"
    assert scored[column].tolist() == pytest.approx(scored_csv[column].tolist(), abs=1e-6)


# --- Kubernetes ----------------------------------------------------------------------------

KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
MANIFESTS = {
    path.name: document
    for path in sorted(K8S.glob("*.yaml"))
    if path.name != "kustomization.yaml"
    for document in yaml.safe_load_all(path.read_text())
    if document
}


def manifest(kind: str, name: str = "mymodel-serve") -> dict:
    (found,) = [
        document for document in MANIFESTS.values() if document["kind"] == kind and document["metadata"]["name"] == name
    ]
    return found


DEPLOYMENT = manifest("Deployment")
POD = DEPLOYMENT["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]
ENV = {entry["name"]: entry["value"] for entry in CONTAINER["env"]}
CONTAINER_PORTS = {entry["name"]: entry["containerPort"] for entry in CONTAINER["ports"]}
POD_LABELS = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]


def strictly_valid(documents: dict[str, dict]) -> None:
    version = kubernetes_schemas.latest_version()
    for name, document in documents.items():
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {error.message} at {list(error.path)}")


def test_every_manifest_validates_strictly_against_the_newest_kubernetes_schemas():
    strictly_valid(MANIFESTS)
    # Strict means strict: a misspelt field is an error, not something silently dropped.
    misspelt = copy.deepcopy(DEPLOYMENT)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = CONTAINER["readinessProbe"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, kubernetes_schemas.latest_version(), strict=True)


def test_kustomization_applies_every_manifest_and_takes_the_image_from_the_release():
    assert KUSTOMIZATION["apiVersion"].startswith("kustomize.config.k8s.io/")
    assert KUSTOMIZATION["kind"] == "Kustomization"
    assert sorted(KUSTOMIZATION["resources"]) == sorted(MANIFESTS)
    # The image comes only from the component set-image.sh writes, which git never holds.
    assert KUSTOMIZATION["components"] == ["release"] and "images" not in KUSTOMIZATION
    assert "/release/" in (K8S / ".gitignore").read_text().splitlines()


# The release: deploy/k8s/image-tag.sh names the build, set-image.sh points the manifests at it.


def git(root: Path, *args: str) -> str:
    identity = ["-c", "user.name=release", "-c", "user.email=release@example.invalid"]
    return subprocess.run(
        ["git", "-C", str(root), *identity, *args], check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path, settings, metrics) -> Path:
    """A commit holding deploy/k8s, and the trained model beside it where `make train` leaves it."""
    root = tmp_path / "checkout"
    shutil.copytree(K8S, root / "deploy" / "k8s", ignore=shutil.ignore_patterns("release"))
    shutil.copytree(settings.paths.model_dir, root / load_settings().paths.model_dir.relative_to(ROOT))
    (root / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "a release")
    return root


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60)


def image_tag(root: Path) -> str:
    result = run_script(root / "deploy" / "k8s" / "image-tag.sh")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def kustomize(k8s: Path) -> subprocess.CompletedProcess:
    """`kubectl kustomize`, the kustomize built into kubectl (v4 or later: components)."""
    assert shutil.which("kubectl"), "kubectl is needed to render deploy/k8s (docs/docker-and-kubernetes.md)"
    return subprocess.run(["kubectl", "kustomize", str(k8s)], capture_output=True, text=True, timeout=60)


def rendered(k8s: Path) -> dict[tuple[str, str], dict]:
    result = kustomize(k8s)
    assert result.returncode == 0, result.stderr
    return {
        (document["kind"], document["metadata"]["name"]): document
        for document in yaml.safe_load_all(result.stdout)
        if document
    }


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_the_release_tag_is_the_model_version_and_the_commit_and_marks_uncommitted_builds(checkout, settings):
    version = json.loads((settings.paths.model_dir / "config.json").read_text())["version"]
    commit = git(checkout, "rev-parse", "--short=12", "HEAD")
    assert image_tag(checkout) == f"{version}-g{commit}"
    with (checkout / "deploy" / "k8s" / "pdb.yaml").open("a") as changed:
        changed.write("# an edit not committed\n")
    assert image_tag(checkout) == f"{version}-g{commit}-dirty"
    # image-tag.sh reads the native pipeline's weights, which the image builds train byte for byte
    # (the image tests compare the container's answers with them); without them `make image` still
    # builds, and tags no release.
    script = (K8S / "image-tag.sh").read_text()
    model_dir = load_settings().paths.model_dir.relative_to(ROOT)
    assert "${MODEL_DIR:-" + str(model_dir) + "}" in script
    assert re.search(
        r'^if release_tag="\$\(deploy/k8s/image-tag\.sh\)"', (ROOT / "docker" / "images.sh").read_text(), re.M
    )


def test_the_build_tags_the_serving_image_with_the_release_tag():
    images = (ROOT / "docker" / "images.sh").read_text()
    assert re.search(r'release_tag="\$\(deploy/k8s/image-tag\.sh\)"', images)
    assert re.search(r'"\$builder" tag "\$serve_tag" "\$repository:\$release_tag"', images)


def test_the_manifests_run_the_release_set_image_names_and_nothing_else(checkout):
    k8s = checkout / "deploy" / "k8s"
    # No release, nothing to apply: kustomize stops on the missing component.
    missing = kustomize(k8s)
    assert missing.returncode != 0 and "release" in missing.stderr
    tag = image_tag(checkout)
    reference = f"registry.example.com:5000/ml/mymodel-serve:{tag}@{digest_of(tag)}"
    written = run_script(k8s / "set-image.sh", reference)
    assert written.returncode == 0, written.stderr
    assert written.stdout.strip() == reference
    documents = rendered(k8s)
    # The same objects as the files, strictly valid as rendered.
    assert set(documents) == {(document["kind"], document["metadata"]["name"]) for document in MANIFESTS.values()}
    strictly_valid({f"{kind}/{name}": document for (kind, name), document in documents.items()})
    deployment = documents[("Deployment", "mymodel-serve")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == reference
    assert container["imagePullPolicy"] == "IfNotPresent"  # safe: the tag and digest name one build
    assert deployment["metadata"]["annotations"]["kubernetes.io/change-cause"] == f"image {reference}"
    assert deployment["spec"]["template"]["metadata"]["labels"] == {**POD_LABELS, "app.kubernetes.io/version": tag}
    assert deployment["spec"]["selector"] == DEPLOYMENT["spec"]["selector"]  # selectors are immutable
    # Apart from the image and those two, kustomize renders the files unchanged.
    rest = copy.deepcopy(deployment)
    del rest["metadata"]["annotations"], rest["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"]
    rest["spec"]["template"]["spec"]["containers"][0]["image"] = CONTAINER["image"]
    assert rest == DEPLOYMENT
    # A second release replaces the first.
    retagged = f"registry.example.com:5000/ml/mymodel-serve:{tag}"
    assert run_script(k8s / "set-image.sh", retagged).returncode == 0
    (container,) = rendered(k8s)[("Deployment", "mymodel-serve")]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == retagged


def test_the_files_alone_name_no_image_that_could_be_pulled():
    name, tag = CONTAINER["image"].rsplit(":", 1)
    assert name == "mymodel-serve" and tag not in ("", "latest")
    assert CONTAINER["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize(
    "reference, reason",
    [
        ("registry.example.com/ml/mymodel-serve", "no tag"),
        ("registry.example.com:5000/mymodel-serve", "no tag"),
        ("registry.example.com/ml/mymodel-serve:latest", "'latest'"),
        ("registry.example.com/ml/mymodel-serve:1.0-63a6473f-g0123456789ab-dirty", "uncommitted"),
        ("registry.example.com/ml/mymodel-serve:1.0@sha256:0123", "not a sha256 digest"),
        ("registry.example.com/ml/mymodel-serve:-1.0", "not a tag"),
        ("Registry.example.com/ML/mymodel-serve:1.0", "not an image name"),
        ("registry.example.com/ml/mymodel-serve:1.0\nkind: Secret", "not a tag"),
    ],
)
def test_set_image_refuses_a_reference_that_does_not_name_one_build(reference, reason, tmp_path):
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S, k8s, ignore=shutil.ignore_patterns("release"))
    result = run_script(k8s / "set-image.sh", reference)
    assert result.returncode == 2 and reason in result.stderr, result.stderr
    assert not (k8s / "release").exists()


def test_container_and_service_ports_are_the_public_ports_of_config_properties():
    assert set(CONTAINER_PORTS.values()) == public_ports()
    metrics = port(PROPERTIES["metrics_address"])
    management = port(PROPERTIES["management_address"])
    service = manifest("Service")
    assert {entry["port"] for entry in service["spec"]["ports"]} == public_ports() - {metrics}
    assert all(entry["targetPort"] in CONTAINER_PORTS for entry in service["spec"]["ports"])
    # The metrics port only on the headless metrics Service, which carries nothing else.
    scraped = manifest("Service", "mymodel-serve-metrics")
    assert scraped["spec"]["clusterIP"] == "None"
    assert [CONTAINER_PORTS[entry["targetPort"]] for entry in scraped["spec"]["ports"]] == [metrics]
    assert [entry["port"] for entry in scraped["spec"]["ports"]] == [metrics]
    assert DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)
    assert management not in {entry["port"] for s in (service, scraped) for entry in s["spec"]["ports"]}


def test_the_management_api_stays_inside_the_pod_and_the_model_api_is_off():
    assert "127.0.0.1" in PROPERTIES["management_address"]
    assert "TS_MANAGEMENT_ADDRESS" not in ENV  # the loopback address of config.properties
    assert "MANAGEMENT_TOKEN_FILE" not in ENV  # no gateway publishing it (docker/entrypoint.sh)
    assert port(PROPERTIES["management_address"]) not in CONTAINER_PORTS.values()
    assert PROPERTIES["enable_envvars_config"] == "true"  # so that the Deployment's TS_* settings apply
    assert ENV["TS_ENABLE_MODEL_API"] == "false"


# Who may reach the pods: the NetworkPolicies evaluated as Kubernetes matches them (a pod that no
# policy selects for a direction is open that way; a selected one admits what some rule admits).

SERVING_NAMESPACE = "serving"  # wherever `kubectl apply -k` puts the manifests


def namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}  # set by Kubernetes on every namespace


def selects(selector: dict, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "matchExpressions are not modelled here"
    return selector.get("matchLabels", {}).items() <= labels.items()


def peer_admits(peer: dict, namespace: str, labels: dict[str, str]) -> bool:
    assert set(peer) <= {"podSelector", "namespaceSelector"}, "ipBlock is not modelled here"
    in_namespace = (
        selects(peer["namespaceSelector"], namespace_labels(namespace))
        if "namespaceSelector" in peer
        else namespace == SERVING_NAMESPACE
    )
    return in_namespace and selects(peer.get("podSelector", {}), labels)


def port_admits(entry: dict, number: int, protocol: str) -> bool:
    named = entry["port"] if isinstance(entry["port"], int) else CONTAINER_PORTS[entry["port"]]
    return named == number and entry.get("protocol", "TCP") == protocol


def admitted(direction: str, namespace: str, labels: dict[str, str], number: int, protocol: str = "TCP") -> bool:
    """Whether a connection between mymodel-serve's pods and a pod (namespace, labels) on
    `number` is allowed: "ingress" from that pod to ours, "egress" from ours to it."""
    kind, peers = {"ingress": ("Ingress", "from"), "egress": ("Egress", "to")}[direction]
    policies = [
        document["spec"]
        for document in MANIFESTS.values()
        if document["kind"] == "NetworkPolicy"
        and kind in document["spec"]["policyTypes"]
        and selects(document["spec"]["podSelector"], POD_LABELS)
    ]
    if not policies:
        return True
    return any(
        (not rule.get(peers) or any(peer_admits(peer, namespace, labels) for peer in rule[peers]))
        and (not rule.get("ports") or any(port_admits(entry, number, protocol) for entry in rule["ports"]))
        for policy in policies
        for rule in policy.get(direction, [])
    )


def test_network_policies_deny_by_default_both_ways():
    (deny,) = [
        document["spec"]
        for document in MANIFESTS.values()
        if document["kind"] == "NetworkPolicy"
        and "ingress" not in document["spec"]
        and "egress" not in document["spec"]
    ]
    assert sorted(deny["policyTypes"]) == ["Egress", "Ingress"]
    assert selects(deny["podSelector"], POD_LABELS)


def test_network_policies_let_in_predictions_from_the_ingress_path_and_metrics_from_prometheus_only():
    inference = {port(PROPERTIES["inference_address"]), port(PROPERTIES["oip_address"])}
    metrics = port(PROPERTIES["metrics_address"])
    every_port = {port(value) for key, value in PROPERTIES.items() if key.endswith("_address")}
    assert inference | {metrics, port(PROPERTIES["management_address"])} <= every_port
    expected = [
        ("a client in the same namespace", SERVING_NAMESPACE, {"app": "client"}, inference),
        ("the ingress controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}, inference),
        ("Prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, {metrics}),
        ("Grafana beside Prometheus", "monitoring", {"app.kubernetes.io/name": "grafana"}, set()),
        ("Prometheus's label in another namespace", "other", {"app.kubernetes.io/name": "prometheus"}, set()),
        ("a client in another namespace", "other", {"app": "client"}, set()),
    ]
    for who, namespace, labels, allowed in expected:
        reached = {number for number in every_port if admitted("ingress", namespace, labels, number)}
        assert reached == allowed, who
    # The checker can tell: without the policies every port is open to everyone.
    policies = {
        name: MANIFESTS.pop(name)
        for name in [name for name, document in MANIFESTS.items() if document["kind"] == "NetworkPolicy"]
    }
    try:
        assert admitted("ingress", "other", {}, port(PROPERTIES["management_address"]))
    finally:
        MANIFESTS.update(policies)


def test_network_policies_let_nothing_out_not_even_dns():
    for namespace, labels, number, protocol in [
        ("kube-system", {"k8s-app": "kube-dns"}, 53, "UDP"),
        ("kube-system", {"k8s-app": "kube-dns"}, 53, "TCP"),
        (SERVING_NAMESPACE, {"app": "client"}, 443, "TCP"),
        ("monitoring", {"app.kubernetes.io/name": "prometheus"}, 9090, "TCP"),
    ]:
        assert not admitted("egress", namespace, labels, number, protocol), (namespace, number)


def test_the_deployments_settings_serve_with_no_network_but_loopback_and_refuse_the_model_api(
    archive, plugins, schema, tmp_path
):
    """TorchServe started as the image starts it, with the Deployment's TS_* settings, in a network
    namespace of its own that has only loopback: what the default-deny egress leaves a pod."""
    settings_env = {name: value for name, value in ENV.items() if name.startswith("TS_")}
    probe = textwrap.dedent("""
        import json, sys
        from pathlib import Path
        import requests
        from harness.torchserve import torchserve
        store, work, plugins, env, sample = sys.argv[1:]
        with torchserve(Path(store), Path(work), extra_env=json.loads(env), plugins=Path(plugins)) as server:
            seen = {}
            reply = requests.post(server.inference_url + "/predictions/mymodel", data=Path(sample).read_bytes(),
                                  headers={"Content-Type": "application/json"}, timeout=30)
            seen["predict"] = [reply.status_code, reply.json()]
            seen["v2_ready"] = requests.get(server.oip_url + "/v2/models/mymodel/ready", timeout=10).status_code
            reply = requests.post(server.management_url + "/models", params={"url": "mymodel.mar"}, timeout=30)
            seen["register"] = [reply.status_code, reply.text]
            reply = requests.delete(server.management_url + "/models/mymodel", timeout=30)
            seen["unregister"] = [reply.status_code, reply.text]
            described = requests.get(server.management_url + "/models/mymodel", timeout=10).json()
            seen["workers"] = [worker["status"] for worker in described[0]["workers"]]
            seen["interfaces"] = sorted(name for _, name in __import__("socket").if_nameindex())
        print(json.dumps(seen))
    """)
    command = [
        "unshare",
        "--map-root-user",
        "--net",
        "--",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        sys.executable,
        "-c",
        probe,
        str(archive.parent),
        str(tmp_path / "work"),
        str(plugins),
        json.dumps(settings_env),
        str(ROOT / "sample_input.json"),
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["interfaces"] == ["lo"]
    status, answer = seen["predict"]
    assert status == 200 and answer["model_version"] == schema["x-model"]["version"], answer
    assert seen["v2_ready"] == 200
    # TorchServe refuses both routes while the model API is off (on, the first would answer 409 for
    # an archive already registered and the second would remove the model).
    for call in ("register", "unregister"):
        status, text = seen[call]
        assert status == 405 and json.loads(text)["type"] == "MethodNotAllowedException", (call, status, text)
    assert seen["workers"] == ["READY"] * MODEL_CONFIG["minWorkers"]


def test_a_pod_stops_within_its_grace_period():
    """preStop pause + the entrypoint's drain + TorchServe's own stop (under 10 s in the image tests)."""
    pause = CONTAINER["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    drain = int(ENV.get("TS_DRAIN_SECONDS", 0))
    assert POD["terminationGracePeriodSeconds"] >= int(pause[1]) + drain + 10


def test_readiness_is_the_images_healthcheck_and_liveness_is_ping():
    serving = instructions(ROOT / "docker" / "Dockerfile")
    healthcheck = [arguments for instruction, arguments in serving if instruction == "HEALTHCHECK"][-1]
    assert CONTAINER["readinessProbe"]["exec"]["command"] == json.loads(healthcheck.split(" CMD ", 1)[1])
    inference = {name for name, number in CONTAINER_PORTS.items() if number == port(PROPERTIES["inference_address"])}
    for probe in ("livenessProbe", "startupProbe"):
        assert CONTAINER[probe]["httpGet"]["path"] == "/ping"
        assert CONTAINER[probe]["httpGet"]["port"] in inference


def quantity(value: str | int) -> Decimal:
    """A Kubernetes quantity ("500m", "1Gi", "2") as a number of cores or bytes."""
    suffixes = {
        "m": Decimal("0.001"),
        "k": Decimal(10) ** 3,
        "M": Decimal(10) ** 6,
        "G": Decimal(10) ** 9,
        "Ki": Decimal(2) ** 10,
        "Mi": Decimal(2) ** 20,
        "Gi": Decimal(2) ** 30,
        "Ti": Decimal(2) ** 40,
    }
    number, suffix = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return Decimal(number) * suffixes.get(suffix, Decimal(1))


def resource_sets() -> dict[str, dict]:
    service = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
    return {
        "deployment": CONTAINER["resources"],
        "inferenceservice": service["spec"]["predictor"]["model"]["resources"],
    }


def bytes_of(size: str) -> int:
    """A JVM size (512m, 64k, 1g) in bytes."""
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", size.lower()).groups()
    return int(number) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit]


def test_a_full_queue_of_the_largest_bodies_fits_the_frontend_heap():
    """Queued requests keep their bodies on the heap: the queue must fill before the heap does."""
    heap = bytes_of(re.search(r"-Xmx(\S+)", PROPERTIES["vmargs"]).group(1))
    queued = int(PROPERTIES["job_queue_size"]) * int(PROPERTIES["max_request_size"])
    assert queued <= 0.8 * heap


def test_resources_fit_the_server_they_hold():
    heap_bytes = bytes_of(re.search(r"-Xmx(\S+)", PROPERTIES["vmargs"]).group(1))
    busy_cores = MODEL_CONFIG["maxWorkers"] * MODEL_CONFIG["handler"]["torch_threads"]
    for name, resources in resource_sets().items():
        for resource in ("cpu", "memory"):
            limit, request = resources["limits"][resource], resources["requests"][resource]
            assert quantity(limit) >= quantity(request), (name, resource)
        # The frontend's heap alone must fit, with the workers beside it.
        assert quantity(resources["requests"]["memory"]) > heap_bytes, name
        assert quantity(resources["limits"]["cpu"]) >= busy_cores, name


def test_pod_runs_unprivileged_on_a_read_only_root():
    upstream = yaml.safe_load_all((KSERVE / "upstream" / "kserve-torchserve.yaml").read_text())
    runtime_user = next(document for document in upstream if document)["spec"]["containers"][0]["securityContext"]
    assert POD["securityContext"]["runAsNonRoot"] is True
    # The same base image's model-server user, as KServe's TorchServe runtime runs it.
    assert POD["securityContext"]["runAsUser"] == runtime_user["runAsUser"]
    context = CONTAINER["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert POD["automountServiceAccountToken"] is False
    # Where TorchServe writes is a volume: the JVM's tmpdir (TEMP), /tmp, matplotlib's cache.
    mounts = {mount["mountPath"]: mount["name"] for mount in CONTAINER["volumeMounts"]}
    empty_dirs = {volume["name"] for volume in POD["volumes"] if "emptyDir" in volume}
    assert mounts.get(ENV["TEMP"]) in empty_dirs and mounts.get("/tmp") in empty_dirs
    for name, value in ENV.items():  # every directory handed to the server is writable
        if value.startswith("/"):
            assert any(value == path or value.startswith(path + "/") for path in mounts), name
    assert set(mounts.values()) <= empty_dirs


def test_service_budget_and_autoscaler_all_point_at_the_deployment():
    pod_labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    selector = DEPLOYMENT["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert manifest("Service")["spec"]["selector"].items() <= pod_labels.items()
    assert manifest("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    autoscaler = manifest("HorizontalPodAutoscaler")["spec"]
    assert autoscaler["scaleTargetRef"] == {
        "apiVersion": DEPLOYMENT["apiVersion"],
        "kind": "Deployment",
        "name": DEPLOYMENT["metadata"]["name"],
    }
    assert [metric["resource"]["name"] for metric in autoscaler["metrics"]] == ["cpu"]
    assert "cpu" in CONTAINER["resources"]["requests"]  # utilization is a share of the request
    assert "replicas" not in DEPLOYMENT["spec"]  # the autoscaler owns the count


def test_rollouts_and_node_drains_take_out_at_most_one_replica_at_a_time():
    budget = manifest("PodDisruptionBudget")["spec"]
    autoscaler = manifest("HorizontalPodAutoscaler")["spec"]
    # One eviction at a time whatever the count (minAvailable: 1 would allow all but one).
    assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget
    assert budget["maxUnavailable"] < autoscaler["minReplicas"]
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"  # a pod that serves nothing never blocks a drain
    # A rollout adds one new pod and removes an old one only once the new one is ready.
    assert DEPLOYMENT["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


# --- KServe --------------------------------------------------------------------------------

INFERENCE_SERVICE = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
CRD_SCHEMA = json.loads((KSERVE / "upstream" / "inferenceservice.schema.json").read_text())
RUNTIME = next(
    document
    for document in yaml.safe_load_all((KSERVE / "upstream" / "kserve-torchserve.yaml").read_text())
    if document
)


def test_inference_service_validates_against_kserves_crd_schema():
    (kind,) = CRD_SCHEMA["x-kubernetes-group-version-kind"]
    assert INFERENCE_SERVICE["apiVersion"] == f"{kind['group']}/{kind['version']}"
    assert INFERENCE_SERVICE["kind"] == kind["kind"]
    validator = jsonschema.Draft7Validator(CRD_SCHEMA)
    validator.validate(INFERENCE_SERVICE)
    misspelt = copy.deepcopy(INFERENCE_SERVICE)
    misspelt["spec"]["predictor"]["model"]["storageURI"] = misspelt["spec"]["predictor"]["model"]["storageUri"]
    assert not validator.is_valid(misspelt)


def test_inference_service_runs_the_torchserve_runtime_of_the_pinned_release():
    model = INFERENCE_SERVICE["spec"]["predictor"]["model"]
    assert model["runtime"] == RUNTIME["metadata"]["name"]
    assert model["modelFormat"]["name"] in {entry["name"] for entry in RUNTIME["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in RUNTIME["spec"]["protocolVersions"]
    assert model["runtimeVersion"] == re.search(r"^torchserve==(\S+)$", REQUIREMENTS, re.M).group(1)
    assert re.fullmatch(r"(s3|gs|pvc|https?)://\S+", model["storageUri"])


def test_kserve_config_is_where_the_runtime_looks_and_says_what_the_project_says():
    args = dict(arg.split("=", 1) for arg in RUNTIME["spec"]["containers"][0]["args"] if "=" in arg)
    mount = "/mnt/models/"  # where KServe puts what storageUri holds
    assert args["--ts-config"] == mount + str((KSERVE / "config" / "config.properties").relative_to(KSERVE))
    assert KSERVE_PROPERTIES["model_store"] == args["--model-store"]
    settings = load_settings()
    snapshot = json.loads(KSERVE_PROPERTIES["model_snapshot"])
    assert snapshot["modelCount"] == len(snapshot["models"]) == 1
    (version,) = snapshot["models"][settings.model.name].values()
    assert list(snapshot["models"][settings.model.name]) == [settings.model.version]
    assert version["marName"] == f"{settings.model.name}.mar"
    for key in ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout"):
        assert version[key] == MODEL_CONFIG[key], key
    assert KSERVE_PROPERTIES["enable_envvars_config"] == "false"  # no TS_SERVICE_ENVELOPE (see the file)
    assert KSERVE_PROPERTIES["enable_model_api"] == "false"  # as the Deployment: no register, no unregister
    # Files the server reads come from the bucket's config/ folder; KServe's protocol server
    # stands in front instead of the frontend plugins.
    assert "plugins_path" not in KSERVE_PROPERTIES
    if "metrics_config" in PROPERTIES:
        assert KSERVE_PROPERTIES["metrics_config"] == mount + "config/" + Path(PROPERTIES["metrics_config"]).name
    # adaptive_batching switches a frontend plugin, which KServe's runtime does not load
    placement = {key for key in PROPERTIES if key.endswith("_address")} | {
        "model_store",
        "load_models",
        "model_snapshot",
        "enable_envvars_config",
        "metrics_config",
        "adaptive_batching",
        "enable_model_api",
    }
    for key in PROPERTIES.keys() - placement:
        assert KSERVE_PROPERTIES.get(key) == PROPERTIES[key], key
    scraped = RUNTIME["spec"]["annotations"]["prometheus.kserve.io/port"]
    assert port(KSERVE_PROPERTIES["metrics_address"]) == int(scraped)
    assert "127.0.0.1" in KSERVE_PROPERTIES["management_address"]


def test_kserve_config_serves_the_archive_from_its_snapshot(archive, schema, tmp_path):
    """TorchServe started as the runtime starts it, with this config (ports and store moved)."""
    inference, management, metrics, grpc_inference, grpc_management = free_ports(5)
    moved = {
        "inference_address": f"http://127.0.0.1:{inference}",
        "management_address": f"http://127.0.0.1:{management}",
        "metrics_address": f"http://127.0.0.1:{metrics}",
        "model_store": str(archive.parent),
    }
    if "metrics_config" in PROPERTIES:  # the file the bucket's copy is uploaded from
        moved["metrics_config"] = str(ROOT / PROPERTIES["metrics_config"])
    text = (KSERVE / "config" / "config.properties").read_text()
    for key, value in moved.items():
        text = re.sub(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
    config = tmp_path / "config.properties"
    config.write_text(text + f"grpc_inference_port={grpc_inference}\ngrpc_management_port={grpc_management}\n")
    command = [
        str(BIN / "torchserve"),
        "--foreground",
        "--ncs",
        f"--model-store={archive.parent}",
        f"--ts-config={config}",
    ]
    with running(command, isolated_env(tmp_path), tmp_path, (inference, management, metrics)) as server:
        (described,) = requests.get(f"{server.management_url}/models/{archive.stem}", timeout=10).json()
        assert len(described["workers"]) == MODEL_CONFIG["minWorkers"]
        assert described["batchSize"] == MODEL_CONFIG["batchSize"]
        sample = (ROOT / "sample_input.json").read_bytes()
        reply = requests.post(
            f"{server.inference_url}/v1/models/{archive.stem}:predict",
            data=sample,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["model_version"] == schema["x-model"]["version"]
        # what KServe's v1 protocol sends: {"instances": [...]} -> {"predictions": [...]}
        instances = {"instances": [json.loads(sample), json.loads(sample)]}
        reply = requests.post(f"{server.inference_url}/v1/models/{archive.stem}:predict", json=instances, timeout=30)
        assert reply.status_code == 200, reply.text
        assert [p["model_version"] for p in reply.json()["predictions"]] == [schema["x-model"]["version"]] * 2
        assert requests.get(f"{server.metrics_url}/metrics", timeout=10).status_code == 200
        # The model API is off: the served model can be neither replaced nor removed.
        registered = requests.post(f"{server.management_url}/models", params={"url": archive.name}, timeout=30)
        unregistered = requests.delete(f"{server.management_url}/models/{archive.stem}", timeout=30)
        for reply in (registered, unregistered):
            assert reply.status_code == 405 and reply.json()["type"] == "MethodNotAllowedException", reply.text
        (described,) = requests.get(f"{server.management_url}/models/{archive.stem}", timeout=10).json()
        assert [worker["status"] for worker in described["workers"]] == ["READY"] * MODEL_CONFIG["minWorkers"]


def test_inference_service_runs_locked_down_as_the_deployment():
    predictor = INFERENCE_SERVICE["spec"]["predictor"]
    model = predictor["model"]
    assert predictor["securityContext"] == POD["securityContext"]
    assert model["securityContext"] == CONTAINER["securityContext"]
    assert predictor["automountServiceAccountToken"] is POD["automountServiceAccountToken"] is False
    # Where the runtime writes on its read-only root is an emptyDir: TEMP, /tmp, and the logs/ that
    # `torchserve --start` writes in the working directory (the base image's, as in docker/Dockerfile).
    serving = instructions(ROOT / "docker" / "Dockerfile")
    workdir = [arguments for instruction, arguments in serving if instruction == "WORKDIR"][-1]
    mounts = {mount["mountPath"]: mount["name"] for mount in model["volumeMounts"]}
    empty_dirs = {volume["name"] for volume in predictor["volumes"] if "emptyDir" in volume}
    env = {entry["name"]: entry["value"] for entry in model["env"]}
    assert set(mounts.values()) <= empty_dirs
    for path in (env["TEMP"], "/tmp", f"{workdir}/logs"):
        assert mounts.get(path) in empty_dirs, path
    for name, value in env.items():
        if value.startswith("/"):
            assert any(value == path or value.startswith(path + "/") for path in mounts), name


# --- The release, as the docs show it -------------------------------------------------------

DOCS = ROOT / "docs" / "docker-and-kubernetes.md"

KUBECTL_STANDIN = '''#!{python}
"""kubectl with a cluster stood in for: `kustomize` is the real one, `apply -k` keeps what it
renders, `get` reads the Deployment's image from that, `rollout status` reports success."""
import os
import subprocess
import sys

import yaml

args = sys.argv[1:]
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write("kubectl " + " ".join(args) + "\\n")
real, state = os.environ["REAL_KUBECTL"], os.environ["CLUSTER_STATE"]
if args[0] == "kustomize":
    os.execv(real, [real, *args])
if args[:2] == ["apply", "-k"]:
    rendered = subprocess.run([real, "kustomize", args[2]], check=True, capture_output=True, text=True).stdout
    with open(state, "w") as cluster:
        cluster.write(rendered)
elif args == ["get", "deployment", "mymodel-serve", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]:
    with open(state) as cluster:
        deployment = next(d for d in yaml.safe_load_all(cluster) if d and d["kind"] == "Deployment")
    print(deployment["spec"]["template"]["spec"]["containers"][0]["image"], end="")
elif args[:3] == ["rollout", "status", "deployment/mymodel-serve"]:
    print('deployment "mymodel-serve" successfully rolled out')
else:
    sys.exit(f"kubectl {args}: not stood in for")
'''

DOCKER_STANDIN = '''#!{python}
"""docker with a registry stood in for: tag and push are recorded, and inspect reports the digest
the push was given."""
import hashlib
import json
import os
import sys

args = sys.argv[1:]
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write("docker " + " ".join(args) + "\\n")
registry = os.environ["REGISTRY_STATE"]
pushed = json.load(open(registry)) if os.path.exists(registry) else {}
if args[0] == "tag" and len(args) == 3:
    pass
elif args[0] == "push" and len(args) == 2:
    pushed[args[1]] = "sha256:" + hashlib.sha256(args[1].encode()).hexdigest()
    with open(registry, "w") as state:
        json.dump(pushed, state)
elif args[:3] == ["inspect", "--format", "{{index .RepoDigests 0}}"] and len(args) == 4:
    print(args[3].rsplit(":", 1)[0] + "@" + pushed[args[3]])
else:
    sys.exit(f"docker {args}: not stood in for")
'''


def kubernetes_blocks() -> list[str]:
    """The shell blocks of the page's Kubernetes section, in order."""
    text = DOCS.read_text()
    section = text[text.index("## Scale out: Kubernetes") :]
    following = re.search(r"^## ", section[1:], re.M)
    section = section[: following.start() + 1] if following else section
    return re.findall(r"^```bash\n(.*?)^```", section, re.S | re.M)


def deployed_image(state: Path) -> str:
    deployment = next(d for d in yaml.safe_load_all(state.read_text()) if d and d["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def test_the_release_and_the_rollback_in_the_docs_run_as_written(checkout, tmp_path):
    """Both blocks, verbatim, in a commit of deploy/k8s with a trained model: image-tag.sh,
    set-image.sh and kustomize are the real ones; docker and the cluster are stand-ins."""
    standins = tmp_path / "bin"
    standins.mkdir()
    for name, text in (("kubectl", KUBECTL_STANDIN), ("docker", DOCKER_STANDIN)):
        (standins / name).write_text(text.replace("{python}", sys.executable))
        (standins / name).chmod(0o755)
    state, log = tmp_path / "cluster.yaml", tmp_path / "calls.log"
    env = {
        **os.environ,
        "PATH": f"{standins}{os.pathsep}{os.environ['PATH']}",
        "REAL_KUBECTL": shutil.which("kubectl"),
        "CLUSTER_STATE": str(state),
        "REGISTRY_STATE": str(tmp_path / "registry.json"),
        "STANDIN_LOG": str(log),
    }

    def run(script: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\n{script}"],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    # What the cluster ran before: an earlier release.
    earlier = f"registry.example.com/ml/mymodel-serve:earlier@{digest_of('earlier')}"
    run(f"deploy/k8s/set-image.sh {earlier} && kubectl apply -k deploy/k8s")
    log.unlink()
    tag = image_tag(checkout)
    release, rollback = kubernetes_blocks()
    shown = run(f'{release}\ncp "$CLUSTER_STATE" "$CLUSTER_STATE.released"\n{rollback}')
    pushed = f"registry.example.com/ml/mymodel-serve:{tag}"
    assert deployed_image(Path(f"{state}.released")) == f"{pushed}@{digest_of(pushed)}"
    assert f"image: {pushed}@{digest_of(pushed)}" in shown.stdout  # the kustomize check before applying
    assert deployed_image(state) == earlier
    calls = log.read_text().splitlines()
    assert (
        calls.index(f"docker tag mymodel-serve:{tag} {pushed}")
        < calls.index(f"docker push {pushed}")
        < calls.index("kubectl apply -k deploy/k8s")
    )
    assert calls.count("kubectl apply -k deploy/k8s") == 2
    assert image_tag(checkout) == tag  # the release left the work tree clean: deploy/k8s/release is ignored


# --- CI ------------------------------------------------------------------------------------

CI = yaml.safe_load(WORKFLOW.read_text())


def runs(job: str) -> list[str]:
    return [step["run"].strip() for step in CI["jobs"][job]["steps"] if "run" in step]


def test_workflow_matches_github_actions_schema():
    result = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", WORKFLOW],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_lints_and_tests_exactly_as_developers_do():
    local = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not re.match(r"(set|cd)\b", line.strip())
    ]
    assert runs("test") == local
    assert runs("lint") == ["make lint"]
    java = re.search(r"JDK (\d+) is required", (ROOT / "Makefile").read_text()).group(1)
    for job in ("lint", "test"):
        setup = {
            step["uses"].split("@")[0]: step.get("with", {}) for step in CI["jobs"][job]["steps"] if "uses" in step
        }
        # Besides the make target, only checking out and installing Python and Java.
        assert set(setup) == {"actions/checkout", "actions/setup-python", "actions/setup-java"}
        assert setup["actions/setup-python"]["python-version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
        assert setup["actions/setup-java"]["java-version"] == java


def test_ci_builds_both_images_and_runs_them_as_developers_do():
    assert runs("images") == ["make image-test"]
    makefile = (ROOT / "Makefile").read_text()
    # image-test packs the native pipeline, which the image tests compare the containers with; they
    # build both images themselves from the tracked files, as the README does, with no trained weights.
    assert re.search(r"^image-test: archive\b", makefile, re.M)
    assert re.search(r"^image: container-tools\b", makefile, re.M)


def dropped_keys(sent: Any, kept: Any, path: str = "") -> list[str]:
    """Where `kept` (the dashboard as Grafana's schema read it) lost or changed what was sent."""
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [f"{path}: not an object in the schema"]
        return [
            problem
            for key, value in sent.items()
            for problem in (
                [f"{path}/{key}: not in the schema"]
                if key not in kept
                else dropped_keys(value, kept[key], f"{path}/{key}")
            )
        ]
    if isinstance(sent, list):
        if not isinstance(kept, list) or len(kept) != len(sent):
            return [f"{path}: not the same list in the schema"]
        return [
            problem
            for index, (a, b) in enumerate(zip(sent, kept))
            for problem in dropped_keys(a, b, f"{path}[{index}]")
        ]
    return [] if sent == kept else [f"{path}: {sent!r} read as {kept!r}"]


def test_the_dashboard_uses_only_what_grafanas_dashboard_schema_declares():
    """Grafana's schema for dashboards (its CUE kinds, as its foundation SDK publishes them for
    Python) reads the dashboard and writes it back: every key at every level the schema models is
    one it declares, and every value comes back the same. (The SDK checks names and structure; it
    does not check types.)"""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    sent = json.loads((ROOT / "deploy" / "grafana" / "mymodel.json").read_text())
    kept = json.loads(json.dumps(Dashboard.from_json(sent), cls=JSONEncoder))
    assert dropped_keys(sent, kept) == []
    # the check can fail: a misspelt key is not in the schema
    misspelt = copy.deepcopy(sent)
    misspelt["panels"][0]["gridpos"] = misspelt["panels"][0].pop("gridPos")
    assert dropped_keys(misspelt, json.loads(json.dumps(Dashboard.from_json(misspelt), cls=JSONEncoder))) == [
        "/panels[0]/gridpos: not in the schema"
    ]
