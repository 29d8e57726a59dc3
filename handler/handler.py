"""TorchServe handler for mymodel: JSON flight records in, late-arrival probabilities out.

TorchServe loads the one class defined here. It only moves bytes between
TorchServe and LateArrivalService (records.py), which holds the logic.
"""

import json
import logging
import os
from typing import Any, Dict, List

import torch
from records import Body, LateArrivalService

log = logging.getLogger(__name__)


class LateArrivalHandler:
    def __init__(self) -> None:
        self.initialized = False
        self.service: LateArrivalService = None  # type: ignore[assignment]
        self.model: Any = None

    def initialize(self, context: Any) -> None:
        model_dir = context.system_properties["model_dir"]
        options: Dict[str, Any] = (getattr(context, "model_yaml_config", None) or {}).get("handler", {})
        # One intra-op thread per worker: the workers themselves use the cores.
        torch.set_num_threads(int(options.get("torch_threads", 1)))
        self.model = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location="cpu").eval()
        with open(os.path.join(model_dir, "schema.json")) as handle:
            schema = json.load(handle)
        self.service = LateArrivalService(schema, self.predict)
        # TorchScript optimizes a graph on its first calls: pay that before the first request.
        for _ in range(3):
            self.service.handle([(json.dumps(self.service.example()), "application/json")])
        # The worker logs a line per request at INFO; warnings and errors still get through.
        logging.getLogger().setLevel(options.get("log_level", "WARNING"))
        self.initialized = True
        log.info("loaded %s version %s", schema["x-model"]["name"], self.service.version)

    @torch.inference_mode()
    def predict(self, categorical: List[List[str]], numeric: List[List[float]]) -> List[float]:
        values = torch.tensor(numeric, dtype=torch.float32).reshape(len(numeric), len(self.service.numeric))
        return self.model(categorical, values).tolist()

    def handle(self, data: List[Dict[str, Any]], context: Any) -> List[str]:
        requests = []
        for index, parameters in enumerate(data):
            body: Body = parameters.get("body", parameters.get("data"))
            requests.append((body, _content_type(context.get_all_request_header(index))))
        replies = self.service.handle(requests)
        for index, reply in enumerate(replies):
            context.set_response_status(reply.status, "", index)
            context.set_response_content_type(index, "application/json")
        return [reply.body for reply in replies]


def _content_type(headers: Dict[str, Any]) -> str:
    """The request's Content-Type header ("" when the client sent none). Request
    parameters share this map with dict values; HTTP headers have string values."""
    for name, value in headers.items():
        if isinstance(value, str) and name.lower() == "content-type":
            return value
    return ""


