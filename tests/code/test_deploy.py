"""The deployment recipes stay valid and in step with the project, with no cluster and no
Docker engine: the offline image and the command it runs, the Kubernetes manifests, the
KServe InferenceService with its TorchServe config, and the CI workflow."""

from __future__ import annotations

import ast
import copy
import fnmatch
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
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

from model.config import ROOT, load_settings
from model.layers import closure
from model.lifecycle.torchserve import free_ports, isolated_env, running

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
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in dockerfile.read_text().splitlines()
                                                 if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


OFFLINE = ROOT / "docker" / "Dockerfile.offline"
OFFLINE_STEPS = instructions(OFFLINE)
OFFLINE_IGNORE = [line.strip() for line in (ROOT / "docker" / "Dockerfile.offline.dockerignore").read_text()
                  .splitlines() if line.strip() and not line.startswith("#")]
OFFLINE_RUN = " ".join(arguments for instruction, arguments in OFFLINE_STEPS if instruction == "RUN")


def entrypoint(steps: list[tuple[str, str]]) -> list[str]:
    return json.loads([arguments for instruction, arguments in steps if instruction == "ENTRYPOINT"][-1])


def context_copies(steps: list[tuple[str, str]]) -> list[str]:
    """Build-context paths the Dockerfile copies (not those from other stages)."""
    return [source for instruction, arguments in steps if instruction == "COPY" and "--from=" not in arguments
            for source in arguments.split()[:-1]]


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
                names |= {f"model.{alias.name}" for alias in node.names
                          if (ROOT / "model" / f"{alias.name}.py").exists()}
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
    result = subprocess.run([BIN / "hadolint", "--config", ROOT / "docker" / "hadolint.yaml", OFFLINE],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_offline_image_copies_only_what_exists_and_passes_its_ignore_file():
    model_dir = load_settings().paths.model_dir.relative_to(ROOT)
    for source in context_copies(OFFLINE_STEPS):
        inside = [str(path) for path in closure(["model.artifact.predict"])] if source == "model/" else [source]
        for kept in inside:
            assert passes_ignore_file(kept, OFFLINE_IGNORE), f"{kept} is excluded by Dockerfile.offline.dockerignore"
        if source.rstrip("/") != str(model_dir):  # written by `make train`, before `docker build`
            assert (ROOT / source).exists(), source


def test_offline_image_exports_the_saved_weights_where_params_yaml_looks():
    paths = load_settings().paths
    export = re.search(r"python -m model\.artifact\.export --model-dir (\S+) --export-dir (\S+)", OFFLINE_RUN)
    assert export, "the offline image must export model.pt from the saved weights"
    assert (export.group(1), export.group(2)) == (str(paths.model_dir.relative_to(ROOT)),
                                                  str(paths.export_dir.relative_to(ROOT)))
    # the weights its own training stage wrote, never a model from the build context
    model_dir = paths.model_dir.relative_to(ROOT)
    assert ("COPY", f"--from=train /build/{model_dir}/ {model_dir}/") in OFFLINE_STEPS
    assert not passes_ignore_file(f"{model_dir}/config.json", OFFLINE_IGNORE)
    assert "params.yaml" in context_copies(OFFLINE_STEPS)


def test_offline_image_runs_the_scorer_as_a_user_on_the_projects_python():
    starts = [index for index, (instruction, _) in enumerate(OFFLINE_STEPS) if instruction == "FROM"]
    final_steps = OFFLINE_STEPS[starts[-1]:]
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
    copied = {str(path.relative_to(ROOT)) for source in context_copies(OFFLINE_STEPS)
              for path in ([ROOT / source] if source.endswith(".py") else (ROOT / source).rglob("*.py"))
              if passes_ignore_file(str(path.relative_to(ROOT)), OFFLINE_IGNORE)}
    needed = {str(path) for path in closure(["model.artifact.predict"])}
    assert needed <= copied, sorted(needed - copied)


def locked_names(lock: Path) -> set[str]:
    return {normalized(name) for name in re.findall(r"^([A-Za-z0-9][\w.-]*)==", lock.read_text(), re.M)}


def test_offline_image_installs_every_package_the_scorer_imports():
    lock = ROOT / "docker" / "offline.lock"
    # the lock alone, hashes required, torch without its own requirements (see the Dockerfile)
    assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in OFFLINE_STEPS
    assert re.search(r"pip install [^&]*--no-deps --require-hashes\s+\$\{TORCH_INDEX_URL:\+--extra-index-url "
                     r"\"\$TORCH_INDEX_URL\"\}\s+-r /tmp/offline\.lock", OFFLINE_RUN)
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
    return subprocess.run([sys.executable, *command[1:], "--input_path", str(input_path), "--output_path",
                           str(output_path), "--export_dir", str(export_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


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
MANIFESTS = {path.name: document for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
             for document in yaml.safe_load_all(path.read_text()) if document}


def manifest(kind: str, name: str = "mymodel-serve") -> dict:
    (found,) = [document for document in MANIFESTS.values()
                if document["kind"] == kind and document["metadata"]["name"] == name]
    return found


DEPLOYMENT = manifest("Deployment")
POD = DEPLOYMENT["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]


def test_every_manifest_validates_strictly_against_the_newest_kubernetes_schemas():
    version = kubernetes_schemas.latest_version()
    for name, document in MANIFESTS.items():
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {error.message} at {list(error.path)}")
    # Strict means strict: a misspelt field is an error, not something silently dropped.
    misspelt = copy.deepcopy(DEPLOYMENT)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = CONTAINER["readinessProbe"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, version, strict=True)


def test_kustomization_applies_every_manifest_and_names_the_image():
    assert KUSTOMIZATION["apiVersion"].startswith("kustomize.config.k8s.io/")
    assert KUSTOMIZATION["kind"] == "Kustomization"
    assert sorted(KUSTOMIZATION["resources"]) == sorted(MANIFESTS)
    assert {image["name"] for image in KUSTOMIZATION["images"]} == {CONTAINER["image"]}


def test_container_and_service_ports_are_the_public_ports_of_config_properties():
    container_ports = {entry["name"]: entry["containerPort"] for entry in CONTAINER["ports"]}
    assert set(container_ports.values()) == public_ports()
    service = manifest("Service")
    assert {entry["port"] for entry in service["spec"]["ports"]} <= public_ports()
    assert all(entry["targetPort"] in container_ports for entry in service["spec"]["ports"])
    assert port(PROPERTIES["management_address"]) not in {entry["port"] for entry in service["spec"]["ports"]}
    metrics = port(PROPERTIES["metrics_address"])
    assert DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)


def test_a_pod_stops_within_its_grace_period():
    """preStop pause + the entrypoint's drain + TorchServe's own stop (under 10 s in the image tests)."""
    pause = CONTAINER["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    drain = next((int(v["value"]) for v in CONTAINER.get("env", []) if v["name"] == "TS_DRAIN_SECONDS"), 0)
    assert POD["terminationGracePeriodSeconds"] >= int(pause[1]) + drain + 10


def test_readiness_is_the_images_healthcheck_and_liveness_is_ping():
    serving = instructions(ROOT / "docker" / "Dockerfile")
    healthcheck = [arguments for instruction, arguments in serving if instruction == "HEALTHCHECK"][-1]
    assert CONTAINER["readinessProbe"]["exec"]["command"] == json.loads(healthcheck.split(" CMD ", 1)[1])
    inference = {entry["name"] for entry in CONTAINER["ports"]
                 if entry["containerPort"] == port(PROPERTIES["inference_address"])}
    for probe in ("livenessProbe", "startupProbe"):
        assert CONTAINER[probe]["httpGet"]["path"] == "/ping"
        assert CONTAINER[probe]["httpGet"]["port"] in inference


def quantity(value: str | int) -> Decimal:
    """A Kubernetes quantity ("500m", "1Gi", "2") as a number of cores or bytes."""
    suffixes = {"m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
                "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40}
    number, suffix = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return Decimal(number) * suffixes.get(suffix, Decimal(1))


def resource_sets() -> dict[str, dict]:
    service = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
    return {"deployment": CONTAINER["resources"],
            "inferenceservice": service["spec"]["predictor"]["model"]["resources"]}


def bytes_of(size: str) -> int:
    """A JVM size (512m, 64k, 1g) in bytes."""
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", size.lower()).groups()
    return int(number) * {"": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30}[unit]


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
    env = {entry["name"]: entry["value"] for entry in CONTAINER["env"]}
    assert mounts.get(env["TEMP"]) in empty_dirs and mounts.get("/tmp") in empty_dirs
    for name, value in env.items():  # every directory handed to the server is writable
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
    assert autoscaler["scaleTargetRef"] == {"apiVersion": DEPLOYMENT["apiVersion"], "kind": "Deployment",
                                            "name": DEPLOYMENT["metadata"]["name"]}
    assert [metric["resource"]["name"] for metric in autoscaler["metrics"]] == ["cpu"]
    assert "cpu" in CONTAINER["resources"]["requests"]  # utilization is a share of the request
    assert "replicas" not in DEPLOYMENT["spec"]  # the autoscaler owns the count
    assert manifest("PodDisruptionBudget")["spec"]["minAvailable"] < autoscaler["minReplicas"]


# --- KServe --------------------------------------------------------------------------------

INFERENCE_SERVICE = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
CRD_SCHEMA = json.loads((KSERVE / "upstream" / "inferenceservice.schema.json").read_text())
RUNTIME = next(document for document in yaml.safe_load_all((KSERVE / "upstream" / "kserve-torchserve.yaml")
                                                                .read_text()) if document)


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
    # Files the server reads come from the bucket's config/ folder; KServe's protocol server
    # stands in front instead of the frontend plugins.
    assert "plugins_path" not in KSERVE_PROPERTIES
    if "metrics_config" in PROPERTIES:
        assert KSERVE_PROPERTIES["metrics_config"] == mount + "config/" + Path(PROPERTIES["metrics_config"]).name
    # adaptive_batching switches a frontend plugin, which KServe's runtime does not load
    placement = {key for key in PROPERTIES if key.endswith("_address")} | {
        "model_store", "load_models", "model_snapshot", "enable_envvars_config", "plugins_path", "metrics_config",
        "adaptive_batching"}
    for key in PROPERTIES.keys() - placement:
        assert KSERVE_PROPERTIES.get(key) == PROPERTIES[key], key
    scraped = RUNTIME["spec"]["annotations"]["prometheus.kserve.io/port"]
    assert port(KSERVE_PROPERTIES["metrics_address"]) == int(scraped)
    assert "127.0.0.1" in KSERVE_PROPERTIES["management_address"]


def test_kserve_config_serves_the_archive_from_its_snapshot(archive, schema, tmp_path):
    """TorchServe started as the runtime starts it, with this config (ports and store moved)."""
    inference, management, metrics, grpc_inference, grpc_management = free_ports(5)
    moved = {"inference_address": f"http://127.0.0.1:{inference}",
             "management_address": f"http://127.0.0.1:{management}",
             "metrics_address": f"http://127.0.0.1:{metrics}", "model_store": str(archive.parent)}
    if "metrics_config" in PROPERTIES:  # the file the bucket's copy is uploaded from
        moved["metrics_config"] = str(ROOT / PROPERTIES["metrics_config"])
    text = (KSERVE / "config" / "config.properties").read_text()
    for key, value in moved.items():
        text = re.sub(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
    config = tmp_path / "config.properties"
    config.write_text(text + f"grpc_inference_port={grpc_inference}\ngrpc_management_port={grpc_management}\n")
    command = [str(BIN / "torchserve"), "--foreground", "--ncs", f"--model-store={archive.parent}",
               f"--ts-config={config}"]
    with running(command, isolated_env(tmp_path), tmp_path, (inference, management, metrics)) as server:
        (described,) = requests.get(f"{server.management_url}/models/{archive.stem}", timeout=10).json()
        assert len(described["workers"]) == MODEL_CONFIG["minWorkers"]
        assert described["batchSize"] == MODEL_CONFIG["batchSize"]
        sample = (ROOT / "sample_input.json").read_bytes()
        reply = requests.post(f"{server.inference_url}/v1/models/{archive.stem}:predict", data=sample,
                              headers={"Content-Type": "application/json"}, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["model_version"] == schema["x-model"]["version"]
        # what KServe's v1 protocol sends: {"instances": [...]} -> {"predictions": [...]}
        instances = {"instances": [json.loads(sample), json.loads(sample)]}
        reply = requests.post(f"{server.inference_url}/v1/models/{archive.stem}:predict", json=instances, timeout=30)
        assert reply.status_code == 200, reply.text
        assert [p["model_version"] for p in reply.json()["predictions"]] == [schema["x-model"]["version"]] * 2
        assert requests.get(f"{server.metrics_url}/metrics", timeout=10).status_code == 200


# --- CI ------------------------------------------------------------------------------------

CI = yaml.safe_load(WORKFLOW.read_text())


def runs(job: str) -> list[str]:
    return [step["run"].strip() for step in CI["jobs"][job]["steps"] if "run" in step]


def test_workflow_matches_github_actions_schema():
    result = subprocess.run([BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", WORKFLOW],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_lints_and_tests_exactly_as_developers_do():
    local = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.startswith("#") and not re.match(r"(set|cd)\b", line.strip())]
    assert runs("test") == local
    assert runs("lint") == ["make lint"]
    java = re.search(r"Java (\d+) is required", (ROOT / "Makefile").read_text()).group(1)
    for job in ("lint", "test"):
        setup = {step["uses"].split("@")[0]: step.get("with", {}) for step in CI["jobs"][job]["steps"]
                 if "uses" in step}
        # Besides the make target, only checking out and installing Python and Java.
        assert set(setup) == {"actions/checkout", "actions/setup-python", "actions/setup-java"}
        assert setup["actions/setup-python"]["python-version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
        assert setup["actions/setup-java"]["java-version"] == java


def test_ci_builds_both_images_and_runs_them_as_developers_do():
    assert runs("images") == ["make image-test"]
    makefile = (ROOT / "Makefile").read_text()
    # image-test builds the images first, and the images build from the packed pipeline.
    assert re.search(r"^image-test: image\b", makefile, re.M) and re.search(r"^image: archive\b", makefile, re.M)


def dropped_keys(sent: Any, kept: Any, path: str = "") -> list[str]:
    """Where `kept` (the dashboard as Grafana's schema read it) lost or changed what was sent."""
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [f"{path}: not an object in the schema"]
        return [problem for key, value in sent.items()
                for problem in ([f"{path}/{key}: not in the schema"] if key not in kept
                                else dropped_keys(value, kept[key], f"{path}/{key}"))]
    if isinstance(sent, list):
        if not isinstance(kept, list) or len(kept) != len(sent):
            return [f"{path}: not the same list in the schema"]
        return [problem for index, (a, b) in enumerate(zip(sent, kept))
                for problem in dropped_keys(a, b, f"{path}[{index}]")]
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
    assert dropped_keys(misspelt, json.loads(json.dumps(Dashboard.from_json(misspelt), cls=JSONEncoder))) \
        == ["/panels[0]/gridpos: not in the schema"]
