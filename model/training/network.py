"""The served network: raw feature values in, the target's probability out.

Everything between a request's values and the MLP lives in this module so the
exported TorchScript is self-contained: category vocabularies (unknown and
missing have their own rows), median imputation with missing-value indicators,
standardization, and a sine/cosine encoding for periodic numbers such as the
month, so December sits next to January. It imports nothing but torch and runs
on Python 3.9 with the serving image's older torch, where the archive is built.
"""

import math
from typing import TYPE_CHECKING, Any, Dict, List

import torch
from torch import Tensor, nn

UNKNOWN = 0  # categories never seen in training
MISSING = 1  # "" stands for a missing category
MISSING_VALUE = ""


class TabularNet(nn.Module):
    if TYPE_CHECKING:  # the buffers registered in __init__, for the type checker only: class annotations
        # would change what TorchScript infers for nn.Module's own attributes (and so model.pt's bytes)
        offsets: Tensor
        fill: Tensor
        mean: Tensor
        std: Tensor
        cyclic_index: Tensor
        linear_index: Tensor
        angular: Tensor

    def __init__(
        self,
        categorical: List[str],
        numeric: List[str],
        vocabularies: List[Dict[str, int]],
        numeric_fill: List[float],
        numeric_mean: List[float],
        numeric_std: List[float],
        periods: List[float],
        embedding_dim: int,
        hidden: List[int],
        dropout: float,
        missing: str = "median_indicator",
        categorical_encoding: str = "embedding",
    ):
        super().__init__()
        self.categorical: List[str] = list(categorical)
        self.numeric: List[str] = list(numeric)
        self.vocabularies: List[Dict[str, int]] = [dict(v) for v in vocabularies]
        self.unknown: int = UNKNOWN
        sizes = [max(v.values()) + 1 for v in vocabularies]
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("fill", torch.tensor(numeric_fill, dtype=torch.float32), persistent=False)
        self.register_buffer("mean", torch.tensor(numeric_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(numeric_std, dtype=torch.float32), persistent=False)
        cyclic = [i for i, p in enumerate(periods) if p > 0]
        linear = [i for i, p in enumerate(periods) if p <= 0]
        self.register_buffer("cyclic_index", torch.tensor(cyclic, dtype=torch.long), persistent=False)
        self.register_buffer("linear_index", torch.tensor(linear, dtype=torch.long), persistent=False)
        angular = [2 * math.pi / periods[i] for i in cyclic]
        self.register_buffer("angular", torch.tensor(angular, dtype=torch.float32), persistent=False)

        # Missing numbers are always filled (numeric_fill); "median_indicator" also adds one
        # 0/1 column per number saying it was missing.
        self.indicators: bool = missing == "median_indicator"
        # "one_hot": a frozen identity table; each column's rows are disjoint, so summing the
        # looked-up rows over columns gives the concatenated one-hot vectors.
        self.one_hot: bool = categorical_encoding == "one_hot"
        vocabulary_rows = max(sum(sizes), 1)
        if self.one_hot:
            self.embedding = nn.Embedding(vocabulary_rows, vocabulary_rows)
            self.embedding.weight.data.copy_(torch.eye(vocabulary_rows))
            self.embedding.weight.requires_grad_(False)
            encoded = vocabulary_rows if categorical else 0
        else:
            self.embedding = nn.Embedding(vocabulary_rows, embedding_dim)
            encoded = embedding_dim * len(categorical)
        width = len(linear) + 2 * len(cyclic) + (len(numeric) if self.indicators else 0) + encoded
        inputs = width
        layers: List[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        # Which columns of the first layer's input carry each request field, in the order
        # features() concatenates them. Exported with the model: the handler's /explanations and
        # the offline interpretation sum attributions over these, and read them from here only.
        order = linear + cyclic + cyclic + (list(range(len(numeric))) if self.indicators else [])
        columns: Dict[str, List[int]] = {name: [] for name in list(categorical) + list(numeric)}
        for position, index in enumerate(order):
            columns[numeric[index]].append(position)
        for j, name in enumerate(categorical):
            first = len(order) + (offsets[j] if self.one_hot else j * embedding_dim)
            columns[name] = list(range(first, first + (sizes[j] if self.one_hot else embedding_dim)))
        covered = sorted(position for positions in columns.values() for position in positions)
        if covered != list(range(inputs)):
            raise RuntimeError(
                "the field layout covers "
                + str(len(covered))
                + " of the first layer's "
                + str(inputs)
                + " inputs: features() and this layout disagree"
            )
        self.field_columns: Dict[str, List[int]] = columns

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "TabularNet":
        keys = [
            "categorical",
            "numeric",
            "vocabularies",
            "numeric_fill",
            "numeric_mean",
            "numeric_std",
            "periods",
            "embedding_dim",
            "hidden",
            "dropout",
            "missing",
            "categorical_encoding",
        ]
        return cls(**{key: config[key] for key in keys if key in config})

    def forward(self, categorical: List[List[str]], numeric: Tensor) -> Tensor:
        """categorical[j] holds column j's strings for every row ("" = missing);
        numeric is float [rows, len(self.numeric)] with NaN for missing."""
        return torch.sigmoid(self.logits(self.category_indices(categorical, numeric.size(0)), numeric))

    @torch.jit.export
    def category_indices(self, categorical: List[List[str]], rows: int) -> Tensor:
        if len(categorical) != len(self.vocabularies):
            raise ValueError(
                "expected " + str(len(self.vocabularies)) + " categorical columns, got " + str(len(categorical))
            )
        indices = torch.zeros(len(self.vocabularies), rows, dtype=torch.long)
        for j, vocabulary in enumerate(self.vocabularies):
            column = categorical[j]
            if len(column) != rows:
                raise ValueError(
                    "categorical column "
                    + self.categorical[j]
                    + " has "
                    + str(len(column))
                    + " values for "
                    + str(rows)
                    + " rows"
                )
            indices[j] = torch.tensor([vocabulary.get(value, self.unknown) for value in column], dtype=torch.long)
        return indices.t()

    @torch.jit.export
    def logits(self, indices: Tensor, numeric: Tensor) -> Tensor:
        return self.mlp(self.features(indices, numeric)).squeeze(1)

    @torch.jit.export
    def features(self, indices: Tensor, numeric: Tensor) -> Tensor:
        """What the MLP's first layer sees: scaled numbers, sine/cosine of periodic ones, missing
        indicators (if any), category embeddings (explanations attribute in this space)."""
        if numeric.dim() != 2 or numeric.size(1) != len(self.numeric):
            raise ValueError("expected numeric input of shape [rows, " + str(len(self.numeric)) + "]")
        numeric = numeric.to(torch.float32)
        missing = ~torch.isfinite(numeric)
        filled = torch.where(missing, self.fill.expand_as(numeric), numeric)
        scaled = (filled - self.mean) / self.std
        angle = filled.index_select(1, self.cyclic_index) * self.angular
        looked_up = self.embedding(indices + self.offsets)
        embedded = looked_up.sum(1) if self.one_hot else looked_up.flatten(1)
        parts = [scaled.index_select(1, self.linear_index), torch.sin(angle), torch.cos(angle)]
        if self.indicators:
            parts.append(missing.to(torch.float32))
        parts.append(embedded)
        return torch.cat(parts, dim=1)
