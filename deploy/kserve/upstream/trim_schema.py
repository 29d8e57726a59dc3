"""Cut KServe's InferenceService CRD schema down to what deploy/kserve/inferenceservice.yaml uses.

    git -C kserve show v0.20.0:config/crd/full/serving.kserve.io_inferenceservices.yaml > crd.yaml
    python deploy/kserve/upstream/trim_schema.py crd.yaml deploy/kserve/inferenceservice.yaml \
        --source "kserve/kserve v0.20.0 (commit ...)" > deploy/kserve/upstream/inferenceservice.schema.json

The full schema is about 2 MB (it inlines the whole Kubernetes pod spec). Every object on
the way to a field the manifest sets is copied with all its property names, types, enums
and required fields, and closed to unknown names (as `kubectl --validate=strict` reports
them); a subtree the manifest does not enter is cut to its type. Rerun after the manifest
starts using a new field.
"""

import argparse
import json
from typing import Any

import yaml

KEEP_WHEN_CUT = ("type", "anyOf", "x-kubernetes-int-or-string")


def trim(schema: dict[str, Any], used: Any) -> dict[str, Any]:
    """`schema` reduced to the parts `used` (a manifest value, or None when unused) enters."""
    if used is None:
        return {key: schema[key] for key in KEEP_WHEN_CUT if key in schema}
    trimmed = {key: value for key, value in schema.items() if key not in ("properties", "items", "description")}
    if "properties" in schema:
        values = used if isinstance(used, dict) else {}
        trimmed["properties"] = {name: trim(sub, values.get(name)) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            trimmed["additionalProperties"] = False
    if "items" in schema:
        trimmed["items"] = trim(schema["items"], merged(used) if isinstance(used, list) else None)
    return trimmed


def merged(items: list[Any]) -> Any:
    """One value standing for every element of a list: the union of their keys, recursively."""
    if not items or not all(isinstance(item, dict) for item in items):
        return items[0] if items else None
    keys = {key for item in items for key in item}
    return {key: merged([item[key] for item in items if key in item]) for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("crd", help="serving.kserve.io_inferenceservices.yaml from the kserve repository")
    parser.add_argument("manifest", help="the InferenceService to keep the schema's used parts for")
    parser.add_argument("--source", required=True, help="where the CRD came from (release and commit)")
    args = parser.parse_args()
    with open(args.crd) as handle:
        crd = next(document for document in yaml.safe_load_all(handle) if document)
    with open(args.manifest) as handle:
        manifest = yaml.safe_load(handle)
    version = manifest["apiVersion"].split("/")[1]
    served = next(entry for entry in crd["spec"]["versions"] if entry["name"] == version)
    schema = {
        "$comment": f"The {version} openAPIV3Schema of {crd['metadata']['name']} from {args.source}, "
        f"config/crd/full/serving.kserve.io_inferenceservices.yaml (Apache License 2.0), "
        f"trimmed by deploy/kserve/upstream/trim_schema.py to what {args.manifest} uses.",
        "x-kubernetes-group-version-kind": [
            {"group": crd["spec"]["group"], "version": version, "kind": crd["spec"]["names"]["kind"]}
        ],
        **trim(served["schema"]["openAPIV3Schema"], manifest),
    }
    print(json.dumps(schema, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
