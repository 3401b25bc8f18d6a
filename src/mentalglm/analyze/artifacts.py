"""The analyzer's saved classifiers: one model per task, loaded from and saved to the artifacts directory.

They are built by `mentalglm analyze-train` (analyze/recipe.py) from the user's data directory (never committed:
the data licences do not allow redistributing models fitted on them without thought, and they are easy to
rebuild). Each task gets ``<task>.tfidf.pkl`` and ``<task>.card.json`` (data, splits, validation metrics,
calibration, limitations), and the files of the parts its card names (encoders, screen, domain check).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from mentalglm.analyze.calibration import Calibration
from mentalglm.analyze.domain import DomainCheck
from mentalglm.analyze.ensemble import AveragedEncoders, Ensemble
from mentalglm.errors import ConfigError, MissingDataError
from mentalglm.files import sha256_file
from mentalglm.tasks import Task, get_task
from mentalglm.train.classical import Classifier, TfidfClassifier, tfidf_part
from mentalglm.train.screen import GatedClassifier, ScreenGate

ENV_VAR = "MENTALGLM_ANALYZER_DIR"


def default_artifacts_dir() -> Path:
    """``$MENTALGLM_ANALYZER_DIR`` or ``~/.cache/mentalglm/analyzer``."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "mentalglm" / "analyzer").expanduser()


@dataclass
class TaskModel:
    """A task's classifier (any ``Classifier``) with its calibration and card: what the analyzer's engines run."""

    task: Task
    classifier: Classifier
    calibration: Calibration = field(default_factory=Calibration)
    card: dict[str, Any] = field(default_factory=dict)
    domain: DomainCheck | None = None  # tasks whose training posts come from one narrow place (DOMAIN_ORDINARY)

    @property
    def tfidf(self) -> TfidfClassifier | None:
        """The TF-IDF model the classifier is built on, if any: the explanation verifier reads with it (fast, and
        it reads short texts well enough); a model without one gets no verifier check."""
        return tfidf_part(self.classifier)

    def predict(self, texts: Sequence[str]) -> list[tuple[tuple[str, ...], dict[str, float]]]:
        """Per post: decided label ids and the calibrated probability of every label."""
        raw = self.classifier.predict_proba(texts)
        calibrated = self.calibration.apply(raw)
        return [(labels, {c: float(p) for c, p in zip(self.classifier.classes, row, strict=True)})
                for labels, row in zip(self.classifier.decide(raw), calibrated, strict=True)]


def model_paths(directory: Path, task_id: str) -> tuple[Path, Path]:
    return directory / f"{task_id}.tfidf.pkl", directory / f"{task_id}.card.json"


def domain_path(directory: Path, task_id: str) -> Path:
    """The task's domain check (analyze/domain.py), when its card names one."""
    return directory / f"{task_id}.domain.pkl"


def screen_path(directory: Path, task_id: str) -> Path:
    """The task's screen (train/screen.py), when its card names one."""
    return directory / f"{task_id}.screen.pkl"


def encoder_path(directory: Path, task_id: str) -> Path:
    """The ensemble's encoder (LoRA adapter, head, classifier.json) beside the task's TF-IDF model."""
    return directory / f"{task_id}.encoder"


class Part(Protocol):
    """A piece of a task's saved model beyond its TF-IDF base, named by one key of the card.

    Loading applies the parts in ``PARTS`` order to the model read so far; saving lets every part write its
    files, or remove a stale copy when the model has no such part, so a rebuild never leaves one behind.
    """

    def load(self, model: TaskModel, directory: Path) -> TaskModel: ...

    def save(self, model: TaskModel, directory: Path) -> None: ...


class EncoderEnsemble:
    """Card key ``ensemble``: the TF-IDF model averaged with fine-tuned encoders kept in ``<task>.encoder/``."""

    def load(self, model: TaskModel, directory: Path) -> TaskModel:
        record = model.card.get("ensemble")
        if not record:
            return model
        from mentalglm.train.encoder_classifier import (  # torch: only if named
            CLASSIFIER_FILE,
            EncoderClassifier,
        )

        task_id = model.task.id
        if not isinstance(model.classifier, TfidfClassifier):
            raise TypeError(f"the {task_id} ensemble averages the TF-IDF model, not a {type(model.classifier).__name__}")
        root = encoder_path(directory, task_id)
        members = record["encoder"].get("members")  # cards written before seed averaging: one encoder in root
        directories = [root / m["dir"] for m in members if m["used"]] if members else [root]
        encoders = []
        for encoder_dir in directories:
            if not (encoder_dir / CLASSIFIER_FILE).is_file():
                raise MissingDataError(f"encoder of the {task_id} ensemble (its card names one)", encoder_dir,
                                       "rebuild with `mentalglm analyze-train --encoder` or without it")
            encoders.append(EncoderClassifier.load(encoder_dir))
        return replace(model, classifier=Ensemble(
            model.classifier, encoders[0] if len(encoders) == 1 else AveragedEncoders(encoders),
            float(record["weight_on_tfidf"]), list(record.get("thresholds") or [])))

    def save(self, model: TaskModel, directory: Path) -> None:
        """A copy of each used encoder run's ``final/`` (a few MB)."""
        target = encoder_path(directory, model.task.id)
        shutil.rmtree(target, ignore_errors=True)
        if "ensemble" in model.card:
            for member in model.card["ensemble"]["encoder"]["members"]:
                if member["used"]:
                    shutil.copytree(member["final_dir"], target / member["dir"])


def frozen_path(directory: Path, task_id: str) -> Path:
    """The frozen encoders' classifiers averaged with the task's TF-IDF model (analyze/frozen.py)."""
    return directory / f"{task_id}.frozen.pkl"


class FrozenEnsemble:
    """Card key ``frozen_ensemble``: the TF-IDF model averaged with frozen encoders' classifiers, ``<task>.frozen.pkl``."""

    def load(self, model: TaskModel, directory: Path) -> TaskModel:
        record = model.card.get("frozen_ensemble")
        if not record:
            return model
        from mentalglm.analyze.frozen import EncoderAverage

        path = frozen_path(directory, model.task.id)
        if not path.is_file():
            raise MissingDataError(f"frozen encoders of the {model.task.id} model (its card names them)", path,
                                   "rebuild with `mentalglm analyze-train`")
        if not isinstance(model.classifier, TfidfClassifier):
            raise TypeError(f"the {model.task.id} frozen ensemble averages the TF-IDF model, "
                            f"not a {type(model.classifier).__name__}")
        return replace(model, classifier=Ensemble(model.classifier, EncoderAverage.load(path),
                                                  float(record["weights"]["tfidf"])))

    def save(self, model: TaskModel, directory: Path) -> None:
        path = frozen_path(directory, model.task.id)
        inner = model.classifier.inner if isinstance(model.classifier, GatedClassifier) else model.classifier
        if "frozen_ensemble" in model.card and isinstance(inner, Ensemble):
            inner.encoder.save(path)  # type: ignore[attr-defined]
        else:
            path.unlink(missing_ok=True)


class Screen:
    """Card key ``screen``: the task's screen (train/screen.py) in front of the classifier, ``<task>.screen.pkl``."""

    def load(self, model: TaskModel, directory: Path) -> TaskModel:
        task = model.task
        if model.card.get("screen"):
            screen_file = screen_path(directory, task.id)
            if not screen_file.is_file() or task.screen is None:
                raise MissingDataError(f"screen of the {task.id} model (its card names one)", screen_file,
                                       "rebuild with `mentalglm analyze-train`")
            return replace(model, classifier=GatedClassifier(ScreenGate.load(screen_file), model.classifier,
                                                             task.screen.none_label))
        if task.screen is not None:
            raise MissingDataError(f"screen of the {task.id} model: the card was written before task {task.id} "
                                   f"version {task.version} had one", model_paths(directory, task.id)[1],
                                   "rebuild with `mentalglm analyze-train`")
        return model

    def save(self, model: TaskModel, directory: Path) -> None:
        screen_file = screen_path(directory, model.task.id)
        if isinstance(model.classifier, GatedClassifier):
            model.classifier.gate.save(screen_file)
        else:
            screen_file.unlink(missing_ok=True)


class DomainWarning:
    """Card key ``domain_check``: how much a post resembles the task's training posts (analyze/domain.py)."""

    def load(self, model: TaskModel, directory: Path) -> TaskModel:
        record = model.card.get("domain_check")
        if not record:  # cards written before the domain check have none: results then carry no warning
            return model
        domain_file = domain_path(directory, model.task.id)
        if not domain_file.is_file():
            raise MissingDataError(f"domain check of the {model.task.id} model (its card names one)", domain_file,
                                   "rebuild with `mentalglm analyze-train`")
        return replace(model, domain=DomainCheck(TfidfClassifier.load(domain_file), float(record["threshold"])))

    def save(self, model: TaskModel, directory: Path) -> None:
        domain_file = domain_path(directory, model.task.id)
        if model.domain is not None:
            model.domain.classifier.save(domain_file)
        else:
            domain_file.unlink(missing_ok=True)


def backbone_path(directory: Path) -> Path:
    """The backbone tier's model (adapter, heads, GGUF), one copy shared by every task whose card names it."""
    return directory / "backbone"


def own_explainer(directory: Path | None) -> tuple[Path, str] | None:
    """The explainer GGUF of the analyzer's backbone (``mentalglm backbone explainer``) and the digest of the adapter
    it came from, None without one: the LLM that ``llamacpp:default`` means for this analyzer (one base decides and
    explains). ``directory`` None is the default analyzer directory, as for the task models."""
    root = backbone_path(directory or default_artifacts_dir())
    if not (root / "backbone.json").is_file():
        return None
    from mentalglm.train.backbone_model import explainer_gguf  # torch: only with a backbone

    return explainer_gguf(root)


class BackboneEnsemble:
    """Card key ``backbone``: the TF-IDF model averaged with the task's head on the shared backbone (``backbone/``).

    The card records the digest of the heads it was tuned with; another backbone in its place is refused by name,
    never read instead, and no other tier is used when it is missing.
    """

    def load(self, model: TaskModel, directory: Path) -> TaskModel:
        record = model.card.get("backbone")
        if not record:
            return model
        from mentalglm.train.backbone_model import HEADS_FILE, shared_backbone  # torch: only if named

        root = backbone_path(directory)
        heads = root / HEADS_FILE
        if not heads.is_file():
            raise MissingDataError(f"backbone of the {model.task.id} model (its card names one)", heads,
                                   "rebuild with `mentalglm analyze-train --backbone RUN/final` or without it")
        if sha256_file(heads) != record["heads_sha256"]:
            raise ConfigError(f"{heads} is not the backbone the {model.task.id} model was tuned with (its card "
                              "records another digest); rerun `mentalglm analyze-train --backbone ...`")
        if not isinstance(model.classifier, TfidfClassifier):
            raise TypeError(f"the {model.task.id} backbone ensemble averages the TF-IDF model, "
                            f"not a {type(model.classifier).__name__}")
        head = shared_backbone(root, model.task.id, engine=record.get("engine", "auto"))
        return replace(model, classifier=Ensemble(model.classifier, head, float(record["weight_on_tfidf"]),
                                                  list(record.get("thresholds") or [])))

    def save(self, model: TaskModel, directory: Path) -> None:
        """One copy for every task: written when missing or another; never removed by a task without one."""
        record = model.card.get("backbone")
        if not record:
            return
        from mentalglm.train.backbone_model import HEADS_FILE

        target, source = backbone_path(directory), Path(record["source"])
        if (target / HEADS_FILE).is_file() and sha256_file(target / HEADS_FILE) == record["heads_sha256"]:
            return
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns("*.partial", "backbone-merged-*"))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)


PARTS: tuple[Part, ...] = (EncoderEnsemble(), FrozenEnsemble(), BackboneEnsemble(), Screen(), DomainWarning())


def load_task_model(task_id: str, directory: Path | None = None) -> TaskModel:
    """The TF-IDF model and card, then every part the card names."""
    directory = directory or default_artifacts_dir()
    model_path, card_path = model_paths(directory, task_id)
    if not model_path.is_file() or not card_path.is_file():
        raise MissingDataError(
            f"analyzer model for task {task_id}", directory,
            "build it with `mentalglm analyze-train --data-dir DATA` (or pass --artifacts-dir / $" + ENV_VAR + ")")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    model = TaskModel(get_task(task_id), TfidfClassifier.load(model_path),
                      Calibration.from_dict(card.get("calibration", {})), card)
    for part in PARTS:
        model = part.load(model, directory)
    return model


def save_task_model(model: TaskModel, directory: Path) -> tuple[Path, Path]:
    """The TF-IDF pickle, every part's files, and the card."""
    tfidf = model.tfidf
    if tfidf is None:
        raise ConfigError(f"the {model.task.id} model has no TF-IDF base ({type(model.classifier).__name__}): "
                          "saved analyzer models are built on one (train them with `mentalglm analyze-train`)")
    model_path, card_path = model_paths(directory, model.task.id)
    tfidf.save(model_path)
    for part in PARTS:
        part.save(model, directory)
    card_path.write_text(json.dumps(model.card, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return model_path, card_path
