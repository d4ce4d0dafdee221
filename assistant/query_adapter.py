"""The query adapter: a learned linear correction of the question's vector before the vector
search, ``q' = unit(q + q·Δ)``.

The embedder (multilingual-e5-small, 4-bit) places readers' questions near passages that share
their wording, and an English question near French passages only loosely. ``Δ`` (dim × dim) is
trained on questions with known relevant chunks or articles (``python -m
evaluation.train_adapter``): a softmax over every chunk of the index, scored as the search
scores them (the best of the chunk's vector and its sentence windows'), pulls each question
towards its relevant passages; an L2 penalty keeps ``Δ`` small, so the adapted vector stays
close to the embedder's. Only the question side changes: the index is untouched, both engines
receive the same adapted vector, and the cost is one small matrix product per question.

The file (``.npz``, no pickles) records the index recipe it was trained on; the retriever uses
it only on an index of that recipe, because ``Δ`` belongs to one embedder's vector space.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from assistant.errors import ConfigError


class QueryAdapter:
    """``Δ`` and what it was trained for."""

    def __init__(self, index_model: str, delta: np.ndarray, trained_on: dict | None = None):
        delta = np.asarray(delta, dtype=np.float32)
        if delta.ndim != 2 or delta.shape[0] != delta.shape[1]:
            raise ConfigError(f"query adapter: expected a square matrix, got shape {delta.shape}")
        self.index_model = index_model  # the index recipe it was trained on (IndexInfo.model)
        self.delta = delta
        self.trained_on = dict(trained_on or {})

    @property
    def dim(self) -> int:
        return self.delta.shape[0]

    @property
    def fingerprint(self) -> str:
        """Names this ``Δ`` (a digest of its values): what a learned ranker records of the
        adapter its candidates were searched with."""
        return hashlib.sha256(self.delta.tobytes()).hexdigest()[:12]

    def apply(self, vector: np.ndarray) -> np.ndarray:
        """The adapted unit vector of one question vector."""
        vector = np.asarray(vector, dtype=np.float32).ravel()
        adapted = vector + vector @ self.delta
        norm = float(np.linalg.norm(adapted))
        return adapted / norm if norm > 0 else vector

    def save(self, path: str | Path) -> None:
        meta = {"kind": "linear-query-adapter", "index_model": self.index_model,
                "trained_on": self.trained_on}
        with open(path, "wb") as f:
            np.savez_compressed(f, delta=self.delta, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | Path) -> "QueryAdapter":
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                delta = data["delta"]
            return cls(str(meta["index_model"]), delta, trained_on=meta.get("trained_on"))
        except FileNotFoundError:
            raise ConfigError(f"query adapter not found: {p} (train it with "
                              "`python -m evaluation.train_adapter`, or set \"query_adapter\": \"\" "
                              "in the retrieval configuration)") from None
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
            raise ConfigError(f"query adapter {p}: malformed ({e})") from None
