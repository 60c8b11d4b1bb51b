"""The registered model as MLflow serves it (``mlflow.pyfunc`` "models from code").

The registry holds no pickle: the model version's artifacts are this file and ``params``, the
parameters as safetensors. Loading builds the architecture named in the model config with the
installed ``fedmap`` package and loads the tensors into it by name and shape.

``predict`` takes the model's features (one column per feature, in the order of the version's
signature: the task recipe's columns, one-hot indicators included) and returns, for the task in
the model config, p(y = 1 | x) (binary) or the log relative risk (survival; higher means an
earlier event). Standardisation is per site: a site scales its rows with its own statistics
before calling the model (see docs/tiers.md).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
from mlflow.pyfunc.model import PythonModel, PythonModelContext


class FedMAPModel(PythonModel):
    """A fedmap model (logreg, mlp or mlp-bn) whose parameters come from a safetensors file; it
    predicts what its task scores: p(y = 1 | x), or the risk score of a survival model."""

    def load_context(self, context: PythonModelContext) -> None:
        from fedmap.data import TASKS
        from fedmap.messages import decode_params
        from fedmap.models import build_model

        config = context.model_config
        task = str(config.get("task", "binary"))  # versions before survival were binary
        if task not in TASKS:
            raise ValueError(f"model config task must be one of {', '.join(TASKS)}, got {task!r}")
        self.task = task
        model = build_model(str(config["model"]), int(config["n_features"]))
        params = decode_params(Path(context.artifacts["params"]).read_bytes())
        model.load_state_dict(params, strict=True)
        self.model = model.eval()

    # No type hints on purpose: MLflow would read them as the model's input schema; the
    # signature logged with the model (column names, float64) is the schema instead.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import torch

        from fedmap.metrics import predict_output

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        return predict_output(self.model, x, self.task).numpy()


mlflow.models.set_model(FedMAPModel())
