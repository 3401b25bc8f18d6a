"""The analyzer's training recipe (`mentalglm analyze-train`): one model per task, chosen and measured on the
task's own splits, with the card that records how.

TF-IDF with C chosen on validation; optionally averaged with a fine-tuned encoder (analyze/ensemble.py) when that
surely helps; behind the task's screen when it declares one (analyze/screened.py); calibrated on validation
(analyze/calibration.py); for forum-only tasks, ordinary posts as negatives and a domain check (analyze/domain.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mentalglm.analyze.artifacts import TaskModel, save_task_model
from mentalglm.analyze.calibration import Calibration, choose_calibration
from mentalglm.analyze.card import (
    add_backbone,
    add_ensemble,
    add_frozen_ensemble,
    add_rejected_ensemble,
    add_screen,
    new_card,
)
from mentalglm.analyze.domain import DomainCheck
from mentalglm.analyze.ensemble import MIN_WIN_RATE, AveragedEncoders, Ensemble, worth_keeping
from mentalglm.data.records import Post
from mentalglm.seeds import DEFAULT_SEED
from mentalglm.tasks import CHINESE_MAIN_TASKS, Task, get_task
from mentalglm.train.classical import C_GRID, Classifier, TfidfClassifier, fit_best_c

if TYPE_CHECKING:  # imports torch
    from mentalglm.train.encoder import EncoderSettings

# Forum-only tasks without a screen (suicide_level: SOS-1K) have never seen an ordinary post, so the model card
# reports how often ordinary posts get a crisis level, and `general_negatives=N` adds N ordinary Weibo posts from
# the emotion task's pool as the first non-positive label. (Measured when suicide_risk still worked this way, with
# 1,000 posts: ordinary high-risk decisions 45.8 % -> 0.0 %, SOS-HL-1K test F1(high) 0.759 -> 0.748, and an
# invented plan became a more confident miss; suicide_risk now has a screen instead, see analyze/screened.py.)
# (task -> source task of ordinary posts)
GENERAL_NEGATIVES: dict[str, str] = {"suicide_level": "emotion"}
# The ordinary posts the task's domain check (analyze/domain.py: a warning on posts unlike the task's own, which
# changes no decision) is trained against: the training pools of these tasks. With the COVID-19 "virus" posts
# beside the "usual" ones, two Weibo sets it never saw (weibo_senti_100k, simplifyweibo_4_moods) are marked
# outside on 98.7 % and 87.5 % of posts instead of 64.0 % and 71.4 % (measured for suicide_risk before its screen,
# with the since-removed benchmarks/domain_check.py; docs/analyze.md keeps the history).
DOMAIN_ORDINARY: dict[str, tuple[str, ...]] = {"suicide_level": ("emotion", "emotion_virus")}
GENERAL_CHECK_POSTS = 1000
# The ensemble encoder's recipe beyond the shared one (LoRA r=16 on e5-small, lr 5e-4, batch 16), per task, from a
# sweep on validation (docs/analyze.md, "The accurate tier"). Emotion: 2 epochs (validation macro-F1 0.742 against
# 0.728 for 1; a third did not help). Cognitive distortion: 3 epochs left the LoRA collapsed (every post scored
# alike: micro-F1 0.542 = the commonest label alone); 10 epochs with 30 % warm-up and positives weighted up to 10x
# escaped the collapse on each of 3 seeds (0.711-0.736), 10 % warm-up collapsed on 1 seed of 4.
ENCODER_RECIPES: dict[str, dict[str, float]] = {
    "emotion": {"epochs": 2.0},
    "cognitive_distortion": {"epochs": 10.0, "warmup_ratio": 0.3, "pos_weight": 10.0},
    "suicide_risk": {"epochs": 3.0},
}


@dataclass
class GeneralPosts:
    """Ordinary posts for a task in GENERAL_NEGATIVES (all empty for other tasks)."""

    negatives: list[Post] = field(default_factory=list)  # added to training as the negative label (none by default)
    check: list[Post] = field(default_factory=list)  # how often ordinary text is flagged (the source's test split)
    ordinary: list[Post] = field(default_factory=list)  # the DOMAIN_ORDINARY training pools, for the domain check
    card: dict[str, Any] | None = None  # the card's data.general_negatives record
    ordinary_source: str | None = None


def _general_posts(task: Task, data_dir: str | Path | None, evaluation: list[list[Post]],
                   n: int | None) -> GeneralPosts:
    """`n` negatives from the source's training pool, `check` posts from its test split, and the `ordinary`
    pools; negatives and ordinary posts are decontaminated against the task's evaluation splits, ordinary ones
    also against `check`."""
    import random

    from mentalglm.data.splits import canonical_splits, decontaminate

    source = GENERAL_NEGATIVES.get(task.id)
    negative = next((label.id for label in task.labels if not label.positive), None)
    if source is None or negative is None:
        return GeneralPosts()
    source_splits, _ = canonical_splits(source, data_dir, include_extra=False)
    picked = random.Random(DEFAULT_SEED).sample(source_splits["train"], min(n or 0, len(source_splits["train"])))
    negatives, dropped = decontaminate(
        [Post(p.id, p.text, (negative,), f"{p.source} (general, as {negative})") for p in picked], evaluation)
    check = source_splits["test"][:GENERAL_CHECK_POSTS]
    sources = DOMAIN_ORDINARY.get(task.id, (source,))
    pools = [source_splits["train"] if name == source else canonical_splits(name, data_dir, include_extra=False)[0]["train"]
             for name in sources]
    ordinary, _ = decontaminate([p for pool in pools for p in pool], [*evaluation, check])
    card = {"source": f"{source} training pool", "label": negative, "posts": len(negatives),
            "dropped_as_contaminated": dropped, "check_posts": f"first {len(check)} of {source} test"}
    return GeneralPosts(negatives, check, ordinary, card, " + ".join(f"{name} training pool" for name in sources))


def encoder_settings(task_id: str, epochs: float | None = None) -> EncoderSettings:
    """The ensemble encoder's recipe: LoRA r=16 on the embedded e5-small, lr 5e-4, then ENCODER_RECIPES[task]."""
    from mentalglm.train.encoder import EncoderSettings

    recipe = {"epochs": 3.0, **ENCODER_RECIPES.get(task_id, {})}
    if epochs:
        recipe["epochs"] = epochs
    return EncoderSettings(model="e5-small", lr=5e-4, lora_rank=16, **recipe)  # type: ignore[arg-type]


def encoder_run_dir(runs: Path, task: Task, settings: EncoderSettings) -> Path:
    """One directory per task and recipe (seed included): a changed recipe starts a new run, the same one resumes."""
    digest = hashlib.sha256(json.dumps(settings.identity(), sort_keys=True).encode()).hexdigest()[:8]
    return runs / f"{task.id}.{settings.slug}-r{settings.lora_rank}-{digest}"


def _fit_ensemble(task: Task, tfidf: TfidfClassifier, train: Sequence[Post], validation: Sequence[Post],
                  settings: EncoderSettings, runs: Path, log: Callable[[str], None],
                  seeds: int = 1) -> tuple[Ensemble, dict[str, Any]]:
    """Fine-tune (or resume, or reuse the finished runs of) the encoder from ``seeds`` seeds, then weigh their
    average against TF-IDF. A collapsed run (every post scored alike) is left out of the average."""
    from mentalglm.analyze.ensemble import fit_ensemble
    from mentalglm.train.encoder import FINAL_DIR, fit_encoder
    from mentalglm.train.encoder_classifier import EncoderClassifier

    kept = ("global_step", "train_posts", f"validation_{task.official_metric}", "validation_history",
            "train_seconds", "trainable_parameters", "validation_probability_spread", "collapsed")
    fitted: list[EncoderClassifier] = []
    members: list[dict[str, Any]] = []
    for seed in range(settings.seed, settings.seed + seeds):
        member = replace(settings, seed=seed)
        run_dir = encoder_run_dir(runs, task, member)
        log(f"{task.id}: encoder {settings.model}, LoRA r={settings.lora_rank}, {settings.epochs:g} epoch(s), "
            f"seed {seed} in {run_dir} (resumable; about 34-40 min an epoch of emotion's 26.6k posts on 2 cores)")
        encoder, summary = fit_encoder(task, train, validation, member, run_dir)
        used = not summary.get("collapsed")
        if not used:
            log(f"{task.id}: the seed-{seed} encoder collapsed (every post scored alike): left out of the average")
        members.append({"seed": seed, "dir": f"seed-{seed}", "final_dir": str(run_dir / FINAL_DIR), "used": used,
                        **{k: summary.get(k) for k in kept}})
        fitted.append(encoder)
    if not any(member["used"] for member in members):  # all collapsed: validation decides whether it is kept
        members[0]["used"] = True
    chosen = [encoder for encoder, member in zip(fitted, members, strict=True) if member["used"]]
    ensemble, record = fit_ensemble(task, tfidf, chosen[0] if len(chosen) == 1 else AveragedEncoders(chosen),
                                    [p.text for p in validation], [p.labels for p in validation])
    record["encoder"] = {"settings": asdict(settings), "seeds": seeds, "members": members}
    log(f"{task.id}: ensemble weight on TF-IDF {record['weight_on_tfidf']} (encoder alone, "
        f"{len(chosen)} seed(s): validation {task.official_metric}="
        f"{record[f'validation_{task.official_metric}_by_weight']['0.0']})")
    return ensemble, record


def _fit_backbone(task: Task, tfidf: TfidfClassifier, current: Classifier, against: str, validation: Sequence[Post],
                  backbone: Path, log: Callable[[str], None],
                  engine: str = "auto") -> tuple[Classifier, dict[str, Any], bool]:
    """TF-IDF averaged with the task's backbone head (weight on validation), kept only when it beats the tier
    chosen so far (TF-IDF, the e5 ensemble or the frozen one) on >= 95 % of paired validation resamples, as the e5
    tier must."""
    from mentalglm.analyze.ensemble import fit_ensemble
    from mentalglm.files import sha256_file
    from mentalglm.tasks.metrics import paired_win_rate
    from mentalglm.train.backbone_model import HEADS_FILE, read_backbone_meta, shared_backbone

    meta = read_backbone_meta(backbone)
    head = shared_backbone(backbone, task.id, engine=engine)
    texts, labels = [p.text for p in validation], [p.labels for p in validation]
    fitted, record = fit_ensemble(task, tfidf, head, texts, labels)
    win = paired_win_rate(task, labels, fitted.predict(texts), current.predict(texts), n_resamples=1000)
    record.update({"source": str(backbone.resolve()), "heads_sha256": sha256_file(backbone / HEADS_FILE),
                   "engine": head.shared.reader.engine, "backbone_step": meta.get("best_step", meta.get("step")),
                   "against": against, "validation_win_rate_over_against": round(win, 4)})
    kept = record["weight_on_tfidf"] < 1.0 and win >= MIN_WIN_RATE
    log(f"{task.id}: backbone ensemble (weight on TF-IDF {record['weight_on_tfidf']}) beat the "
        f"{against} on {win:.0%} of paired validation resamples: "
        + ("kept" if kept else f"not kept (needs {MIN_WIN_RATE:.0%})"))
    return (fitted if kept else current), record, kept


def train_task_model(task_id: str, data_dir: str | Path | None, *, c_grid: Sequence[float] = C_GRID,
                     log: Callable[[str], None] = print, general_negatives: int | None = None,
                     encoder: EncoderSettings | None = None, encoder_runs: Path | None = None,
                     encoder_seeds: int = 1, screen_embedding: bool = True,
                     screen_encoders: Sequence[str] | None = None,
                     backbone: Path | None = None, backbone_engine: str = "auto") -> TaskModel:
    """Fit on the decontaminated training pool, choose C (and thresholds) on validation, calibrate, score test.

    With ``encoder`` settings the TF-IDF model is then averaged with a fine-tuned encoder, or with the mean of
    ``encoder_seeds`` such encoders (``analyze/ensemble.py``); their runs live in ``encoder_runs`` and resume there.
    """
    from mentalglm.analyze.screened import fit_screened, screening_card
    from mentalglm.data.splits import canonical_splits, classifier_posts, screen_data
    from mentalglm.tasks.counts import indicator

    task = get_task(task_id)
    started = time.perf_counter()
    splits, report = canonical_splits(task.id, data_dir, include_extra=False)
    train, validation, test = splits["train"], splits["validation"], splits.get("test", [])
    general = _general_posts(task, data_dir, [validation, test], general_negatives)
    own_train, train = train, train + general.negatives
    screen = screen_data(task.id, data_dir) if task.screen is not None else None
    if screen is not None:  # invented low / high posts also teach the classifier behind the screen
        train = train + classifier_posts(task, screen.train)
    best, tuning = fit_best_c(task, train, validation, c_grid, log)  # a screened task's none label: the screen's
    classifier: Classifier = best
    ensemble: dict[str, Any] | None = None
    rejected: dict[str, Any] | None = None
    if encoder is not None:
        fitted, record = _fit_ensemble(task, best, train, validation, encoder, encoder_runs or Path("encoder-runs"),
                                       log, encoder_seeds)
        if worth_keeping(record):
            classifier, ensemble = fitted, record
        else:  # no sure gain on validation: do not make every post pay for reading the encoder
            rejected = record
            log(f"{task.id}: the ensemble beat TF-IDF on {record['validation_win_rate_over_tfidf']:.0%} of paired "
                f"validation resamples (needs {MIN_WIN_RATE:.0%}); TF-IDF alone is kept")
    frozen: dict[str, Any] | None = None
    # the default tier; the e5 tier chooses its own; the backbone must beat it (its head on 100 suicide-risk
    # validation posts cannot, where the frozen ensemble was chosen by cross-validation over train + validation)
    if task.frozen_encoders and encoder is None:
        from mentalglm.analyze.frozen import fit_frozen_ensemble

        averaged, frozen = fit_frozen_ensemble(task, best, train, validation, task.frozen_encoders, log)
        classifier = averaged or classifier
    backbone_record: tuple[dict[str, Any], bool] | None = None
    if backbone is not None:
        against = ("the e5 ensemble" if ensemble is not None else "the frozen ensemble" if frozen and frozen["kept"]
                   else "TF-IDF")
        classifier, record, kept = _fit_backbone(task, best, classifier, against, validation, backbone, log,
                                                 backbone_engine)
        backbone_record = (record, kept)
    screen_record: dict[str, Any] | None = None
    if screen is not None:
        classifier, screen_record = fit_screened(task, classifier, own_train, validation, screen, log,
                                                 use_embedding=screen_embedding, encoders=screen_encoders)
        # The gate's and the classifier's probabilities are multiplied; a calibration map fitted on validation
        # posts of one population (all flagged) would be wrong for the other, so they are shown as they are.
        calibration, measured = Calibration(), {"chosen": "none", "why": "screened task: P(flag) x P(label | flag)"}
    else:
        val_proba = classifier.predict_proba([p.text for p in validation])
        calibration, measured = choose_calibration(
            val_proba, indicator([p.labels for p in validation], best.classes), best.multi_label)

    card = new_card(task, best, classifier, report=report, train=train, own_train=own_train, validation=validation,
                    test=test, c_grid=c_grid, tuning=tuning, calibration=calibration, calibration_measured=measured,
                    train_seconds=round(time.perf_counter() - started, 1))
    if ensemble is not None and encoder is not None:
        add_ensemble(card, ensemble, encoder)
    if rejected is not None:
        add_rejected_ensemble(card, rejected)
    if frozen is not None:
        add_frozen_ensemble(card, frozen)
    if backbone_record is not None:
        add_backbone(card, *backbone_record)
    if screen is not None and screen_record is not None:
        add_screen(card, screen_record, screening_card(task, classifier, test, screen))
        # Not printed: the held-out shares include the task's test split, and a log read while tuning is where
        # test-peeking starts. The card keeps them for its readers; the screening benchmark scores them once.
        log(f"{task.id}: held-out screening shares written to the model card (screening.flagged)")
    domain: DomainCheck | None = None
    if general.card is not None:
        alarm = set(task.notice_labels("crisis")) or ({task.positive_label.id} if task.positive_label else set())
        flagged = [bool(alarm & set(labels)) for labels in classifier.predict([p.text for p in general.check])]
        general.card["flagged_crisis_rate"] = round(sum(flagged) / max(1, len(flagged)), 4)
        card["data"]["general_negatives"] = general.card
        log(f"{task.id}: ordinary posts given a crisis level ({', '.join(sorted(alarm))}): "
            f"{general.card['flagged_crisis_rate']:.1%}")
        domain, record = _fit_domain_check(task, own_train, general, validation, test, flagged)
        card["domain_check"] = record
        log(f"{task.id}: domain check marks {record['outside_rate']['ordinary_check']:.1%} of ordinary posts and "
            f"{record['outside_rate']['validation']:.1%} of validation posts as outside the training domain")
    return TaskModel(task, classifier, calibration, card, domain)


def _fit_domain_check(task: Task, own_train: Sequence[Post], general: GeneralPosts, validation: Sequence[Post],
                      test: Sequence[Post], check_flagged: Sequence[bool]) -> tuple[DomainCheck, dict[str, Any]]:
    """The task's posts against the ordinary pool; the card records how often each kind of post is outside."""
    domain = DomainCheck.fit(task.id, [p.text for p in own_train], [p.text for p in general.ordinary])
    outside = domain.outside([p.text for p in general.check])
    record = {
        "kind": "char TF-IDF (1-3) + logistic regression: the task's training posts against ordinary posts",
        "C": domain.classifier.C, "max_features": domain.classifier.max_features,
        "in_domain_posts": len(own_train), "ordinary_posts": len(general.ordinary),
        "ordinary_source": general.ordinary_source, "threshold": domain.threshold,
        "outside_rate": {"validation": domain.outside_rate([p.text for p in validation]),
                         "test": domain.outside_rate([p.text for p in test]),
                         "ordinary_check": round(float(outside.mean()), 4)},
        "ordinary_check_flagged_crisis_and_outside": round(float(np.mean(outside & np.array(check_flagged))), 4),
        "effect": "a warning on the result (outside_training_domain); no decision is changed",
    }
    return domain, record


def train_all(data_dir: str | Path | None, out: Path, tasks: Sequence[str] = CHINESE_MAIN_TASKS, *,
              c_grid: Sequence[float] = C_GRID, log: Callable[[str], None] = print,
              general_negatives: int | None = None, encoder: bool = False, encoder_epochs: float | None = None,
              encoder_runs: Path | None = None, encoder_seeds: int | None = None,
              backbone: Path | None = None, backbone_engine: str = "auto",
              screen_encoders: Sequence[str] | None = None) -> list[Path]:
    """Train and save every task's model; returns the card paths."""
    cards = []
    for task_id in tasks:
        model = train_task_model(task_id, data_dir, c_grid=c_grid, log=log, general_negatives=general_negatives,
                                 encoder=encoder_settings(task_id, encoder_epochs) if encoder else None,
                                 encoder_runs=encoder_runs or out / "encoder-runs",
                                 encoder_seeds=encoder_seeds or 1, backbone=backbone,
                                 backbone_engine=backbone_engine, screen_encoders=screen_encoders)
        cards.append(save_task_model(model, out)[1])
        log(f"{task_id}: saved to {out} ({model.card['train_seconds']} s)")
    return cards
