"""MLflow pyfunc model (models-from-code: no pickled state).

MLflow executes this file when the model is loaded; the state is the bundle directory logged as
the ``bundle`` artifact, read with ``patron.bundle.load_bundle`` (checksums verified).
``predict`` takes a DataFrame with ``customer_id`` (and optionally ``k``, default 10) and
returns ``customer_id, rank, item_id, score``; unknown customers get no rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class PatronModel(PythonModel):
    """Top-k picks from a verified bundle: the scoring library the API serves with."""

    def load_context(self, context: Any) -> None:
        from patron.bundle import load_bundle
        from patron.scoring import load_scoring

        path = Path(context.artifacts["bundle"])
        self.bundle = load_bundle(path)
        self.scoring = load_scoring(self.bundle, path)
        ids = self.bundle.customer_ids.astype(str)
        self.index = dict(zip(ids.tolist(), range(len(ids)), strict=True))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from patron.scoring import recommend

        if "customer_id" not in model_input.columns:
            raise ValueError("input needs a 'customer_id' column")
        k = int((params or {}).get("k", model_input["k"].iloc[0] if "k" in model_input else 10))
        wanted = model_input["customer_id"].astype(str).tolist()
        known = [c for c in wanted if c in self.index]
        if not known:
            return pd.DataFrame({"customer_id": [], "rank": [], "item_id": [], "score": []})
        users = np.array([self.index[c] for c in known], dtype=np.int64)
        ids, scores = recommend(self.scoring, users, k)
        ok = ids >= 0
        item_ids = self.bundle.item_ids.astype(str)
        rows, ranks = np.nonzero(ok)
        return pd.DataFrame(
            {
                "customer_id": np.asarray(known)[rows],
                "rank": ranks + 1,
                "item_id": item_ids[ids[ok]],
                "score": scores[ok].astype(float),
            }
        )


mlflow.models.set_model(PatronModel())
