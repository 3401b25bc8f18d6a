"""The model card of a task's analyzer model: what it learnt from, how it was chosen, how well it does, what it
cannot do. The training recipe (analyze/recipe.py) writes it beside the model; loading (analyze/artifacts.py)
reads from it which parts the model has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mentalglm.analyze.calibration import Calibration
from mentalglm.data.records import Post
from mentalglm.data.splits import CanonicalReport
from mentalglm.evaluate.results import jsonable
from mentalglm.tasks import Task
from mentalglm.tasks.metrics import score
from mentalglm.train.classical import Classifier, TfidfClassifier

if TYPE_CHECKING:  # imports torch
    from mentalglm.train.encoder import EncoderSettings

CARD_VERSION = 1
TFIDF_KIND = "char TF-IDF (1-3) + logistic regression"
LIMITATIONS = (
    "Character n-gram TF-IDF with logistic regression: it reads surface wording, not meaning; negation, irony "
    "and context beyond the post are missed.",
    "Trained on Weibo posts of the public datasets named under data; other platforms, languages or time periods "
    "can behave very differently (the analyzer flags mostly non-Chinese text as out_of_domain).",
    "Confidences are calibrated on a small validation split; treat them as rough.",
    "Decision support for professionals, not a diagnosis.",
)
ENCODER_LIMITATION = ("The encoder reads the first 128 tokens of a post only; it was fine-tuned on the same "
                      "training pool as the TF-IDF model.")


def scores(task: Task, classifier: Classifier, posts: Sequence[Post]) -> dict[str, Any]:
    """The task's report metrics of ``classifier`` on ``posts``, without bootstrap intervals."""
    result = score(task, [p.labels for p in posts], classifier.predict([p.text for p in posts]), n_resamples=0)
    return jsonable({k: v for k, v in result.items() if k not in ("bootstrap", "ci95")})


def new_card(task: Task, tfidf: TfidfClassifier, classifier: Classifier, *, report: CanonicalReport,
             train: Sequence[Post], own_train: Sequence[Post], validation: Sequence[Post], test: Sequence[Post],
             c_grid: Sequence[float], tuning: dict[float, float], calibration: Calibration,
             calibration_measured: dict[str, Any], train_seconds: float) -> dict[str, Any]:
    """The card of a TF-IDF model with C chosen on validation; the parts added after it extend the card."""
    return {
        "card_version": CARD_VERSION, "task": task.id, "task_version": task.version,
        "model": {"kind": TFIDF_KIND, "C": tfidf.C, "ngram_range": tfidf.ngram_range,
                  "max_features": tfidf.max_features, "class_weight": "balanced",
                  "thresholds": tfidf.thresholds if tfidf.multi_label else None,
                  "decision": "tuned threshold, at least one label" if tfidf.multi_label else "argmax"},
        "data": {"source": task.source, "splits": {s.name: f"{s.dataset}/{s.part}" for s in task.splits},
                 "train_posts": len(train), "validation_posts": len(validation), "test_posts": len(test),
                 "extra_train_used": False, "train_posts_from_task": len(own_train),
                 "pool_dropped_as_contaminated_or_duplicate": report.pool.dropped,
                 "validation_dropped_against_test": report.dropped_against_test},
        "tuning": {"grid": {"C": list(c_grid)}, f"validation_{task.official_metric}": tuning},
        "validation": scores(task, classifier, validation), "test": scores(task, classifier, test) if test else None,
        "calibration": calibration.to_dict(), "calibration_measured": calibration_measured,
        "limitations": list(LIMITATIONS), "train_seconds": train_seconds,
    }


def add_ensemble(card: dict[str, Any], record: dict[str, Any], encoder: EncoderSettings) -> None:
    """The kept ensemble: its weights and encoder runs (loading reads the members from here)."""
    weight = record["weight_on_tfidf"]
    used = sum(member["used"] for member in record["encoder"]["members"])
    card["model"]["kind"] = (f"ensemble: {weight:.1f} x {TFIDF_KIND}, "
                             f"{1 - weight:.1f} x {'mean of ' + str(used) + ' x ' if used > 1 else ''}"
                             f"{encoder.model} + LoRA r={encoder.lora_rank} + linear head")
    card["ensemble"] = record


def add_rejected_ensemble(card: dict[str, Any], record: dict[str, Any]) -> None:
    """An ensemble tried and not kept: its validation record, for the next attempt."""
    card["ensemble_rejected"] = record
    card["limitations"].append(ENCODER_LIMITATION)


def add_frozen_ensemble(card: dict[str, Any], record: dict[str, Any]) -> None:
    """Frozen encoders tried beside TF-IDF by cross-validation (analyze/frozen.py): kept (loading reads the card
    key ``frozen_ensemble``) or recorded as tried."""
    if not record["kept"]:
        card["frozen_ensemble_rejected"] = record
        return
    weights = record["weights"]
    card["model"]["kind"] = "ensemble: " + ", ".join(
        f"{w:.1f} x " + (TFIDF_KIND if name == "tfidf" else f"frozen {name} + logistic regression")
        for name, w in weights.items() if w > 0)
    card["frozen_ensemble"] = record


def add_backbone(card: dict[str, Any], record: dict[str, Any], kept: bool) -> None:
    """The backbone tier tried against the tier chosen so far: kept (loading reads it from here) or not."""
    if not kept:
        card["backbone_rejected"] = record
        return
    weight = record["weight_on_tfidf"]
    card["model"]["kind"] = (f"ensemble: {weight:.1f} x {TFIDF_KIND}, {1 - weight:.1f} x the backbone's head "
                             "(Qwen2.5-Coder-0.5B + LoRA shared by the tasks + linear head)")
    for replaced in ("ensemble", "frozen_ensemble"):  # the tier it beat, for the record; loading reads "backbone"
        if replaced in card:
            card[f"{replaced}_replaced"] = card.pop(replaced)
    card["backbone"] = record


def add_screen(card: dict[str, Any], record: dict[str, Any], screening: dict[str, Any]) -> None:
    """The task's screen in front of the classifier, and how often held-out posts pass it."""
    card["model"]["kind"] = f"screen ({record['kind']}), then {card['model']['kind']}"
    card["screen"] = record
    card["screening"] = screening
