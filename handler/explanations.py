"""/explanations: integrated gradients of the logit, in the space the MLP's first layer sees
(scaled numbers, sine/cosine of periodic ones, missing indicators, category embeddings), from a
reference record to each record, summed back to the request fields; as
model/analysis/interpret.py does offline. Always on model.pt, whatever runtime predicts.
Python 3.9 compatible: it runs in the serving image's worker.
"""

import importlib
import importlib.util
import logging
import math
from typing import Any, Dict, List, Optional

import torch

from .runtimes import numeric_tensor
from .service import PredictionService

log = logging.getLogger(__name__)


class IntegratedGradients:
    """The service's Explain for model.pt."""

    def __init__(self, model: Any, service: PredictionService, steps: int):
        self.model, self.steps, self.numeric_fields = model, steps, len(service.numeric)
        # Which first-layer inputs carry each request field: exported with model.pt (field_columns).
        self.columns = {name: list(positions) for name, positions in model.field_columns.items()}
        categorical, numeric = service.model_inputs(service.rows([service.example()]))
        indices, _ = self.tensors(categorical, numeric)
        with torch.no_grad():
            # The reference record: every number at its training fill value, every category unknown.
            reference = (torch.full_like(indices, int(model.unknown)), model.fill.unsqueeze(0).clone())
            self.reference = model.features(*reference)

    def tensors(self, categorical: List[List[str]], numeric: List[List[float]]) -> Any:
        return self.model.category_indices(categorical, len(numeric)), numeric_tensor(numeric, self.numeric_fields)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """The logit of the target's probability, from the first layer's input."""
        return self.model.mlp(features).squeeze(1)

    def __call__(self, categorical: List[List[str]], numeric: List[List[float]]) -> List[Dict[str, Any]]:
        indices, values = self.tensors(categorical, numeric)
        with torch.no_grad():
            features = self.model.features(indices, values)
            logits = self.head(features)
            reference_logit = float(self.head(self.reference)[0])
        integrated_gradients = importlib.import_module("captum.attr").IntegratedGradients
        attributions = integrated_gradients(self.head).attribute(
            features,
            baselines=self.reference.expand_as(features),
            n_steps=self.steps,
            internal_batch_size=max(self.steps, 4096),
        )
        per_field = {name: attributions[:, positions].sum(1).tolist() for name, positions in self.columns.items()}
        return [
            {
                "probability": sigmoid(float(logit)),
                "logit": float(logit),
                "baseline_probability": sigmoid(reference_logit),
                "baseline_logit": reference_logit,
                "attributions": {name: column[row] for name, column in per_field.items()},
            }
            for row, logit in enumerate(logits.tolist())
        ]


def explanations_or_none(model: Any, service: PredictionService, steps: int) -> Optional[IntegratedGradients]:
    """The explainer when this environment can explain, else None (explanations answer 501).
    captum is imported on the first explanation: it brings matplotlib, about 30 MiB per worker
    that serves only predictions would carry for nothing."""
    if importlib.util.find_spec("captum") is None:
        log.warning("captum is not installed: /explanations answers 501")
        return None
    return IntegratedGradients(model, service, steps)


def sigmoid(logit: float) -> float:
    return 1 / (1 + math.exp(-logit)) if logit >= 0 else math.exp(logit) / (1 + math.exp(logit))
