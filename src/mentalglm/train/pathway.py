"""The cognitive pathway classifier: which parts of the pathway (and which child of each) a sentence shows.

One-vs-rest over every label of label.txt, parents and children together, on the user's train.txt; a child
implies its parent twice over: a parent's probability is at least its most probable child's, and a decided child
always brings its parent. Every sentence gets at least one label (every line of the files has one).

Candidates are what the project has and can train on a CPU in minutes: character TF-IDF (``train/classical.py``),
frozen e5-small embeddings (``train/embedding.py``, ~50 ms a sentence to embed once, cached) and their average,
each with logistic regression over a small C grid. The one kept has the highest flat dev micro-F1 (all labels,
parents implied: the dataset paper's headline, computed by ``tasks.pathway.pathway_scores``). The LoRA-tuned
e5 of the analyzer's accurate tier is not a candidate: it takes hours a task on two cores.

Thresholds per label are tuned on dev, which the task asks for; ``classical.py`` measured that per-label
thresholds overfit labels with a handful of validation posts, so a label gets its own threshold only with at
least ``MIN_DEV_POSITIVES`` dev sentences and only where it raises the overall dev micro-F1; the others share
the one best threshold. Dev scores of the chosen model are therefore optimistic; test is scored once, after.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.data.loaders.cognitive_pathway import CognitivePathwayFiles
from mentalglm.data.records import Post
from mentalglm.data.splits import decontaminate
from mentalglm.errors import ConfigError, MissingDataError
from mentalglm.files import OwnPickle, atomic_write_text
from mentalglm.tasks.pathway import PATHWAY_TASK_ID, SEPARATOR, parent_of, pathway_scores, with_parents
from mentalglm.tasks.registry import get_task
from mentalglm.train.classical import THRESHOLD_GRID, TfidfClassifier

CARD_VERSION = 1
KINDS = ("tfidf", "e5", "tfidf+e5")
C_GRID = (1.0, 4.0, 16.0)
BLEND_WEIGHTS = (0.25, 0.5, 0.75)  # weight on TF-IDF when averaging it with e5
MIN_DEV_POSITIVES = 5
# Ties (within this much dev micro-F1) go to the cheaper kind: TF-IDF reads a sentence in microseconds.
TIE = 0.005
MODEL_FILE, CARD_FILE = f"{PATHWAY_TASK_ID}.pathway.pkl", f"{PATHWAY_TASK_ID}.card.json"
LIMITATIONS = (
    "Sentence-level labels learned from the user's train.txt: the model knows only the wording of those posts; "
    "other platforms, topics or times can behave very differently.",
    "A sentence is judged alone: a pathway that spans sentences (a trigger in one, its distortion in the next) is "
    "seen as separate parts, and negation or irony beyond the surface wording is missed.",
    "Dev scores were used to choose the model and its thresholds and are optimistic; the test scores on the card "
    "are the honest estimate.",
    "Decision support for professionals, not a diagnosis.",
)


@dataclass
class PathwayClassifier(OwnPickle):
    """Probabilities for every label of label.txt and the hierarchical decision; the ``Classifier`` protocol."""

    labels: list[str]
    kind: str
    tfidf: TfidfClassifier | None = None
    e5: Any = None  # EmbeddingClassifier (train/embedding.py)
    weight_on_tfidf: float = 1.0
    thresholds: list[float] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)  # labels with training sentences; the others score 0

    @property
    def classes(self) -> list[str]:
        return self.labels

    @property
    def multi_label(self) -> bool:
        return True

    def raw_proba(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """Probabilities of the trained labels, before the hierarchy is applied."""
        parts = []
        if self.tfidf is not None:
            parts.append((self.weight_on_tfidf, self.tfidf.predict_proba(texts)))
        if self.e5 is not None:
            if embeddings is None:
                from mentalglm.train.embedding import embed

                embeddings = embed(list(texts))
            parts.append((1.0 - self.weight_on_tfidf if self.tfidf is not None else 1.0,
                          self.e5.proba_from_embeddings(embeddings)))
        return sum(weight * proba for weight, proba in parts)  # type: ignore[return-value]

    def expand(self, raw: np.ndarray) -> np.ndarray:
        """Raw probabilities of the trained labels as columns of every label (0 for the untrained)."""
        out = np.zeros((len(raw), len(self.labels)))
        out[:, [self.labels.index(label) for label in self.trained]] = raw
        return out

    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """(n, labels) in label.txt order; a parent at least as probable as its most probable child."""
        if not len(texts):
            return np.zeros((0, len(self.labels)))
        return consistent(self.expand(self.raw_proba(texts, embeddings)), self.labels)

    def decide(self, proba: np.ndarray) -> list[tuple[str, ...]]:
        matrix = decide_matrix(proba, np.asarray(self.thresholds), self.labels)
        return [tuple(label for label, on in zip(self.labels, row, strict=True) if on) for row in matrix]

    def predict(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        return self.decide(self.predict_proba(texts))



def _parent_columns(labels: Sequence[str]) -> list[tuple[int, int]]:
    """(child column, parent column) for every child whose parent is a label."""
    index = {label: i for i, label in enumerate(labels)}
    return [(i, index[parent_of(label)]) for i, label in enumerate(labels)
            if SEPARATOR in label and parent_of(label) in index]


def consistent(proba: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """A child implies its parent: each parent's probability raised to its most probable child's."""
    out = np.array(proba, dtype=float, copy=True)
    for child, parent in _parent_columns(labels):
        np.maximum(out[:, parent], out[:, child], out=out[:, parent])
    return out


def decide_matrix(proba: np.ndarray, thresholds: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Labels at or above their thresholds, at least the most probable one, and every decided child's parent."""
    chosen = np.asarray(proba) >= thresholds
    empty = ~chosen.any(axis=1)
    chosen[np.flatnonzero(empty), np.asarray(proba)[empty].argmax(axis=1)] = True
    for child, parent in _parent_columns(labels):
        chosen[:, parent] |= chosen[:, child]
    return chosen


def indicator_with_parents(rows: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    y = np.zeros((len(rows), len(labels)), dtype=bool)
    for r, row in enumerate(rows):
        for label in with_parents(row):
            y[r, index[label]] = True
    return y


def micro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    tp = float((gold & pred).sum())
    wrong = float((gold ^ pred).sum())
    return 2 * tp / (2 * tp + wrong) if tp or wrong else 0.0


def tune_thresholds(proba: np.ndarray, gold: np.ndarray, labels: Sequence[str],
                    min_positives: int = MIN_DEV_POSITIVES) -> tuple[list[float], dict[str, Any]]:
    """One shared threshold, then (two passes of coordinate ascent) a label's own where it raises dev micro-F1
    and the label has at least ``min_positives`` dev sentences."""
    def score(thresholds: np.ndarray) -> float:
        return micro_f1(gold, decide_matrix(proba, thresholds, labels))

    shared = max(THRESHOLD_GRID, key=lambda t: (score(np.full(len(labels), t)), -abs(t - 0.5)))
    thresholds = np.full(len(labels), float(shared))
    best = score(thresholds)
    eligible = [j for j in range(len(labels)) if gold[:, j].sum() >= min_positives]
    for _ in range(2):
        for j in eligible:
            for t in THRESHOLD_GRID:
                trial = thresholds.copy()
                trial[j] = float(t)
                value = score(trial)
                if value > best + 1e-12:
                    thresholds, best = trial, value
    own = [labels[j] for j in eligible if thresholds[j] != shared]
    return [float(t) for t in thresholds], {"shared": float(shared), "own_threshold": own,
                                            "eligible_min_dev_positives": min_positives, "dev_micro_f1": round(best, 4)}


@dataclass
class PathwayData:
    """The user's files as the classifier sees them: train less sentences also in dev or test, dev, test."""

    labels: tuple[str, ...]
    train: list[Post]
    dev: list[Post]
    test: list[Post]
    card: dict[str, Any]


def load_pathway_data(pathway_dir: Path | str | None, data_dir: Path | str | None = None, *,
                      skip_bad_rows: bool = False) -> PathwayData:
    """Train, dev and (when present) test; train sentences whose normalised text is in dev or test are dropped
    (the project's decontamination rule: short sentences such as 好难过 repeat across posts)."""
    loader = CognitivePathwayFiles(pathway_dir) if pathway_dir is not None else CognitivePathwayFiles()
    labels = loader.labels(data_dir)
    parts: dict[str, list[Post]] = {}
    skipped: dict[str, int] = {}
    for part in loader.parts():
        try:
            parts[part], report = loader.load(data_dir, part, skip_bad_rows=skip_bad_rows)
        except MissingDataError:
            if part != "test":
                raise
            parts[part], report = [], None  # a model can be built without test; its card then has no test score
        skipped[part] = report.skipped_bad_rows if report else 0
    train, dropped = decontaminate(parts["train"], [parts["dev"], parts["test"]])
    if not train or not parts["dev"]:
        raise ConfigError(f"{loader.root(data_dir)}: need sentences in train.txt and dev.txt to train and tune "
                          f"(train {len(train)}, dev {len(parts['dev'])})")
    card = {"dir": str(loader.root(data_dir)), "files_sha256": loader.files_sha256(data_dir),
            "sentences": {"train": len(train), "dev": len(parts["dev"]), "test": len(parts["test"])},
            "train_dropped_also_in_dev_or_test": dropped, "skipped_bad_rows": skipped,
            "labels": list(labels)}
    return PathwayData(labels, train, parts["dev"], parts["test"], card)


def _embeddings(posts: Sequence[Post], cache: Any) -> np.ndarray:
    from mentalglm.train.embedding import embed

    return embed([p.text for p in posts], cache=cache, progress=True)


@dataclass
class _Trial:
    model: PathwayClassifier
    dev_raw: np.ndarray  # every label's column, before the hierarchy: what a blend averages
    dev_micro_f1: float
    record: dict[str, Any]


def _finish(model: PathwayClassifier, dev_raw: np.ndarray, gold: np.ndarray, record: dict[str, Any]) -> _Trial:
    model.thresholds, tuning = tune_thresholds(consistent(dev_raw, model.labels), gold, model.labels)
    record = {**record, "dev_micro_f1": tuning["dev_micro_f1"], "thresholds": tuning}
    return _Trial(model, dev_raw, tuning["dev_micro_f1"], record)


def select_model(data: PathwayData, kinds: Sequence[str] = KINDS, c_grid: Sequence[float] = C_GRID, *,
                 log: Callable[[str], None] = print, embedding_cache: Any = None) -> tuple[PathwayClassifier, dict[str, Any]]:
    """Fit every candidate, tune its thresholds on dev and keep the best by dev micro-F1 (ties: the cheaper)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ConfigError(f"unknown classifier kinds {unknown}; kinds: {', '.join(KINDS)}")
    labels = list(data.labels)
    train_rows = [with_parents(p.labels) for p in data.train]
    trained = [label for label in labels if any(label in row for row in train_rows)]
    gold_dev = indicator_with_parents([p.labels for p in data.dev], labels)
    y_train = indicator_with_parents(train_rows, trained).astype(int)
    texts, dev_texts = [p.text for p in data.train], [p.text for p in data.dev]
    trials: dict[str, list[_Trial]] = {kind: [] for kind in ("tfidf", "e5")}
    unavailable: dict[str, str] = {}

    if {"tfidf", "tfidf+e5"} & set(kinds):
        for c in c_grid:
            started = time.perf_counter()
            tfidf = TfidfClassifier(PATHWAY_TASK_ID, trained, True, C=c).fit(texts, train_rows)
            model = PathwayClassifier(labels, "tfidf", tfidf=tfidf, trained=trained)
            trials["tfidf"].append(_finish(model, model.expand(model.raw_proba(dev_texts)), gold_dev,
                                           {"kind": "tfidf", "C": c, "seconds": round(time.perf_counter() - started, 2)}))
            log(f"tfidf C={c}: dev micro-F1 {trials['tfidf'][-1].dev_micro_f1:.4f}")
    x_train = x_dev = None
    if {"e5", "tfidf+e5"} & set(kinds):
        from mentalglm.train.embedding import EmbeddingClassifier, EmbeddingUnavailableError

        try:
            started = time.perf_counter()
            x_train, x_dev = _embeddings(data.train, embedding_cache), _embeddings(data.dev, embedding_cache)
            embed_seconds = round(time.perf_counter() - started, 2)
        except EmbeddingUnavailableError as exc:
            unavailable.update({kind: str(exc) for kind in ("e5", "tfidf+e5") if kind in kinds})
            log(f"e5 candidates skipped: {exc}")
        else:
            for c in c_grid:
                started = time.perf_counter()
                e5 = EmbeddingClassifier(trained, multi_label=True, C=c).fit_embeddings(x_train, y_train)
                model = PathwayClassifier(labels, "e5", e5=e5, trained=trained)
                trials["e5"].append(_finish(model, model.expand(model.raw_proba(dev_texts, x_dev)), gold_dev,
                                            {"kind": "e5", "C": c, "embed_seconds": embed_seconds,
                                             "seconds": round(time.perf_counter() - started, 2)}))
                log(f"e5 C={c}: dev micro-F1 {trials['e5'][-1].dev_micro_f1:.4f}")
    blends: list[_Trial] = []
    if "tfidf+e5" in kinds and trials["tfidf"] and trials["e5"]:
        best_tfidf = max(trials["tfidf"], key=lambda t: t.dev_micro_f1)
        best_e5 = max(trials["e5"], key=lambda t: t.dev_micro_f1)
        for weight in BLEND_WEIGHTS:
            model = PathwayClassifier(labels, "tfidf+e5", tfidf=best_tfidf.model.tfidf, e5=best_e5.model.e5,
                                      weight_on_tfidf=weight, trained=trained)
            blended = weight * best_tfidf.dev_raw + (1 - weight) * best_e5.dev_raw
            blends.append(_finish(model, blended, gold_dev, {"kind": "tfidf+e5", "C_tfidf": best_tfidf.record["C"],
                                                             "C_e5": best_e5.record["C"], "weight_on_tfidf": weight}))
            log(f"tfidf+e5 weight {weight}: dev micro-F1 {blends[-1].dev_micro_f1:.4f}")
    pool = [t for kind, found in (("tfidf", trials["tfidf"]), ("e5", trials["e5"]), ("tfidf+e5", blends))
            if kind in kinds for t in found]
    if not pool:
        raise ConfigError(f"no classifier could be trained: {unavailable}")
    cost = {"tfidf": 0, "e5": 1, "tfidf+e5": 2}
    top = max(t.dev_micro_f1 for t in pool)
    chosen = min((t for t in pool if t.dev_micro_f1 >= top - TIE), key=lambda t: (cost[t.model.kind], -t.dev_micro_f1))
    dev_scores = pathway_scores([p.labels for p in data.dev], chosen.model.decide(consistent(chosen.dev_raw, labels)),
                                labels)
    selection = {
        "rule": f"highest flat dev micro-F1 after per-label threshold tuning on dev; within {TIE} of the best, "
                "the cheapest kind (tfidf < e5 < tfidf+e5)",
        "candidates": [t.record for t in pool], "unavailable": unavailable, "chosen": chosen.record,
        "dev": _summary(dev_scores),
    }
    return chosen.model, selection


def _summary(scores: dict[str, Any]) -> dict[str, Any]:
    """The scalar scores (and CIs) of ``pathway_scores``, without its per-label tables."""
    keys = ("n", "micro_f1", "macro_f1", "parent_micro_f1", "parent_macro_f1", "child_micro_f1", "child_macro_f1")
    return {**{k: scores[k] for k in keys}, "ci95": scores.get("ci95", {}), "per_label": scores["per_label"]}


def train_pathway(pathway_dir: Path | str | None, out: Path, *, data_dir: Path | str | None = None,
                  kinds: Sequence[str] = KINDS, c_grid: Sequence[float] = C_GRID, n_resamples: int = 1000,
                  skip_bad_rows: bool = False, log: Callable[[str], None] = print,
                  embedding_cache: Any = None) -> tuple[PathwayClassifier, dict[str, Any]]:
    """Choose, fit and save the classifier (``out/cognitive_pathway.pathway.pkl``) and its model card."""
    started = time.perf_counter()
    data = load_pathway_data(pathway_dir, data_dir, skip_bad_rows=skip_bad_rows)
    log(f"train {len(data.train)} sentences (dropped {data.card['train_dropped_also_in_dev_or_test']} also in dev "
        f"or test), dev {len(data.dev)}, test {len(data.test)}; {len(data.labels)} labels")
    model, selection = select_model(data, kinds, c_grid, log=log, embedding_cache=embedding_cache)
    task = get_task(PATHWAY_TASK_ID)
    card: dict[str, Any] = {
        "card_version": CARD_VERSION, "task": task.id, "task_version": task.version,
        "model": {"kind": model.kind, "labels": model.labels, "trained_labels": model.trained,
                  "labels_without_training_sentences": [x for x in model.labels if x not in model.trained],
                  "thresholds": dict(zip(model.labels, model.thresholds, strict=True)),
                  "weight_on_tfidf": model.weight_on_tfidf if model.kind == "tfidf+e5" else None,
                  "decision": "labels at or above their threshold, at least the most probable one; a decided "
                              "child brings its parent; a parent's probability is at least its children's"},
        "data": data.card, "selection": selection, "published": list(task.published), "citation": task.citation,
        "limitations": list(LIMITATIONS),
    }
    if data.test:
        test_scores = pathway_scores([p.labels for p in data.test], model.predict([p.text for p in data.test]),
                                     model.labels, n_resamples=n_resamples)
        card["test"] = _summary(test_scores)
        log(f"test micro-F1 {test_scores['micro_f1']:.4f} (parent {test_scores['parent_micro_f1']:.4f}, "
            f"child {test_scores['child_micro_f1'] or 0:.4f}) on {len(data.test)} sentences")
    else:
        card["test"] = None
    card["train_seconds"] = round(time.perf_counter() - started, 2)
    card["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    save_pathway_model(model, card, out)
    return model, card


def save_pathway_model(model: PathwayClassifier, card: dict[str, Any], out: Path) -> tuple[Path, Path]:
    model.save(out / MODEL_FILE)
    card_path = atomic_write_text(out / CARD_FILE, json.dumps(card, ensure_ascii=False, indent=2) + "\n")
    return out / MODEL_FILE, card_path


def load_pathway_model(directory: Path) -> tuple[PathwayClassifier, dict[str, Any]]:
    """The classifier and card `mentalglm pathway train --out DIR` wrote; a clear error when they are not there."""
    model_path, card_path = directory / MODEL_FILE, directory / CARD_FILE
    if not model_path.is_file() or not card_path.is_file():
        raise MissingDataError("cognitive pathway model", directory,
                               "build it with `mentalglm pathway train --pathway-dir DIR --out MODEL_DIR` and pass "
                               "--artifacts-dir MODEL_DIR (docs/pathway.md)")
    return PathwayClassifier.load(model_path), json.loads(card_path.read_text(encoding="utf-8"))
