"""Answer sample_input.json with a packed archive's own handler, through TorchServe's own
Context, in the Python and torch at hand, and refuse a malformed body.

The image build runs this right after packing, so an archive that the serving
image's Python 3.9 and torch cannot run fails the build, not the deployment.
Exit 0 when both answers are right, 1 otherwise. Python 3.9 compatible.
"""

import argparse
import importlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List

import yaml
from ts.context import Context, RequestProcessor


def answer(archive: Path, bodies: List[bytes]) -> List[Any]:
    """(status, JSON reply) for each body, handled as one batch."""
    with tempfile.TemporaryDirectory() as model_dir:
        with zipfile.ZipFile(archive) as packed:
            packed.extractall(model_dir)
        manifest = json.loads((Path(model_dir) / "MAR-INF" / "MANIFEST.json").read_text())
        model_config = yaml.safe_load((Path(model_dir) / manifest["model"]["configFile"]).read_text())
        sys.path.insert(0, model_dir)
        handler_module = importlib.import_module(Path(manifest["model"]["handler"]).stem)
        (handler_class,) = [
            c for c in vars(handler_module).values() if isinstance(c, type) and c.__module__ == handler_module.__name__
        ]
        handler = handler_class()
        context = Context(
            manifest["model"]["modelName"],
            model_dir,
            manifest,
            len(bodies),
            None,
            "selfcheck",
            model_yaml_config=model_config,
        )
        handler.initialize(context)
        headers: Dict[str, Any] = {"body": {"content-type": "application/json"}, "Content-Type": "application/json"}
        context.request_processor = [RequestProcessor(dict(headers)) for _ in bodies]
        replies = handler.handle([{"body": body} for body in bodies], context)
        return [(context.get_response_status(i)[0], json.loads(reply)) for i, reply in enumerate(replies)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archive", required=True, type=Path)
    parser.add_argument("--sample", required=True, type=Path, help="a valid request body")
    args = parser.parse_args()
    (good_status, good), (bad_status, bad) = answer(args.archive, [args.sample.read_bytes(), b"{"])
    probabilities = [value for key, value in good.items() if key.endswith("_probability")] if good_status == 200 else []
    ok = len(probabilities) == 1 and 0 < probabilities[0] < 1 and bad_status == 400 and "error" in bad
    print(json.dumps({"ok": ok, "sample": [good_status, good], "malformed": [bad_status, bad]}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
