"""The analyzer's engines, one strategy each behind ``Engine``: how a batch of posts becomes task results.

An engine knows nothing of input checks, injection guarding, domain checks or notices (analyze/engine.py does
those): it gets each post in the forms it may read (``Batch``) and the options of the run (``Run``, read on
every call because a service runs shallow copies of one analyzer with other tasks or explain settings) and
returns one TaskResult per task and post.

``labels``: the classifiers alone. ``attribution``: the classifiers decide and explain themselves (the clauses
whose removal lowers the decided label's probability most, analyze/attribution.py). ``hybrid``: the classifiers
decide, the LLM explains the decided labels (under a grammar that makes it quote the post and state the label,
where the backend follows one: instruct/grounding.py), QC and the TF-IDF verifier check the explanation, one
regeneration if it argues for another label, the attribution sentence if no attempt passes. ``llm``: the LLM answers label and explanation in the C-IMHI layout
(read by the task's declared parse steps; an unreadable answer is INVALID, never a default label).
"""

from __future__ import annotations

import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from mentalglm.analyze import attribution
from mentalglm.analyze.artifacts import TaskModel
from mentalglm.analyze.injection import strip_injection
from mentalglm.analyze.normalise import normalise
from mentalglm.analyze.schema import EngineName, EvidenceSpan, ExplanationSource, LabelScore, TaskResult
from mentalglm.backends.base import Backend, GenerationRequest, GenerationResult, GenerationSettings
from mentalglm.data.pii import scrub
from mentalglm.data.records import Post
from mentalglm.evaluate.predict import LLMSystem
from mentalglm.instruct import occlusion
from mentalglm.instruct.generate import (
    builtin_few_shots,
    clean_explanation,
    retry_settings,
    teacher_messages,
)
from mentalglm.instruct.grounding import (
    Clause,
    explanation_grammar,
    grounded_settings,
    quote_choices,
    quoted_clause,
)
from mentalglm.instruct.qc import Verdict, apply_verifier, check_sample, evidence_quotes
from mentalglm.tasks import Task
from mentalglm.tasks.layout import label_names
from mentalglm.tasks.parsing import read_answer
from mentalglm.train.classical import TfidfVerifier

PerPost = list[dict[str, TaskResult]]  # per post: task id -> its result


class Run(Protocol):
    """What an engine reads of the analyzer that runs it."""

    models: dict[str, TaskModel]
    explain: bool
    settings: GenerationSettings
    regenerate: int
    evidence_hints: bool

    @property
    def classified_tasks(self) -> list[Task]:
        """The tasks an engine decides (cognitive_pathway is read sentence by sentence elsewhere)."""
        ...

    @property
    def backend(self) -> Backend: ...


@dataclass(frozen=True)
class Batch:
    """The posts of one batch in the forms an engine may read."""

    originals: Sequence[str]  # as given: evidence offsets point here
    classifier_inputs: Sequence[str]  # instruction-like spans cut out, spellings folded (classifier_view)
    scrubbed: Sequence[str] | None  # PII-scrubbed, for the LLM; None when the engine uses no LLM in this run


class Engine(ABC):
    """One way of analysing a batch; ``uses_llm`` decides whether posts are scrubbed and a backend is loaded."""

    name: ClassVar[EngineName]
    # False: the engine answers without a trained classifier (it only uses one as a verifier when there is one)
    needs_classifiers: ClassVar[bool] = True

    def uses_llm(self, explain: bool) -> bool:
        return False

    @abstractmethod
    def analyse(self, run: Run, batch: Batch) -> PerPost: ...


class LabelsEngine(Engine):
    """The task classifiers alone: calibrated confidences, no explanation."""

    name: ClassVar[EngineName] = "labels"

    def analyse(self, run: Run, batch: Batch) -> PerPost:
        per_post: PerPost = [{} for _ in batch.originals]
        for task in run.classified_tasks:
            for tasks, result in zip(per_post, self.decide(run, task, batch.classifier_inputs), strict=True):
                tasks[task.id] = result
        return per_post

    def decide(self, run: Run, task: Task, texts: Sequence[str]) -> list[TaskResult]:
        out = []
        for labels, confidences in run.models[task.id].predict(texts):
            result = TaskResult(task=task.id, task_name_zh=task.name_zh, engine=self.name,
                                labels=[label_score(task, label, confidences.get(label)) for label in labels],
                                confidences={k: round(v, 4) for k, v in confidences.items()})
            if attribution.is_none_answer(task, result):
                assert task.screen is not None
                result.nothing_evident, result.nothing_evident_zh = True, task.screen.none_zh
            out.append(result)
        return out


class AttributionEngine(LabelsEngine):
    """The classifiers decide, then each decided label is explained by the clauses of the original post the
    classifier leans on most."""

    name: ClassVar[EngineName] = "attribution"

    def analyse(self, run: Run, batch: Batch) -> PerPost:
        per_post = super().analyse(run, batch)
        if run.explain:
            for task, classes, effects in clause_effects(run, batch.originals):
                for tasks, (pieces, drops) in zip(per_post, effects, strict=True):
                    result = tasks[task.id]
                    attribution.explain(task, result, classes, pieces, drops)
                    result.explanation = scrub_output(result.explanation)
                    result.explanation_source = "attribution"
        return per_post


@dataclass
class _Job:
    """One (post, task) explanation in flight, with the classifier's clause effects for its fallback."""

    post: int
    task: Task
    labels: tuple[str, ...]
    messages: list[dict[str, str]]
    result: TaskResult
    classes: list[str]
    pieces: list[Clause]
    drops: np.ndarray
    grammar: str | None = None


class HybridEngine(LabelsEngine):
    """The classifiers decide; the LLM explains the decided labels with the label-conditioned teacher prompt,
    checked, regenerated on disagreement, and replaced by the attribution sentence when every attempt fails.

    On a backend that follows grammars (llama.cpp) the explanation is grounded (instruct/grounding.py): it states
    the decided label and quotes one of the clauses the classifier relied on, by construction. Elsewhere the
    prompt names those clauses when ``evidence_hints`` is on and the checks afterwards catch the rest. A post the
    screen found nothing in gets the attribution's "nothing evident" sentence: no LLM, no risk wording.
    """

    name: ClassVar[EngineName] = "hybrid"

    def uses_llm(self, explain: bool) -> bool:
        return explain

    def analyse(self, run: Run, batch: Batch) -> PerPost:
        per_post = super().analyse(run, batch)
        if run.explain:
            assert batch.scrubbed is not None
            self._explain(run, per_post, batch.scrubbed, batch.originals)
        return per_post

    def _explain(self, run: Run, per_post: PerPost, scrubbed: Sequence[str], originals: Sequence[str]) -> None:
        jobs = self._jobs(run, per_post, scrubbed, originals)
        pending = jobs
        for attempt in range(run.regenerate + 1):
            if not pending:
                break
            settings = retry_settings(run.settings, attempt)
            requests = [GenerationRequest(job.messages, settings if job.grammar is None else grounded_settings(
                settings, job.task, job.grammar, scrubbed[job.post])) for job in pending]
            retry = []
            for job, reply in zip(pending, run.backend.generate(requests), strict=True):
                if self._record(run, job, reply, attempt, scrubbed[job.post], originals[job.post]):
                    retry.append(job)
            pending = retry
        for job in jobs:
            result = job.result
            if not result.explanation or not result.qc_passed or result.verifier_agrees is False:
                self._fall_back(job, originals[job.post])
            elif job.grammar is not None:
                result.explanation += self._what_would_change(run, job, scrubbed[job.post])

    @staticmethod
    def _what_would_change(run: Run, job: _Job, scrubbed: str) -> str:
        """What would change the reading, measured rather than guessed: the classifier's decision on the post
        without the clause the explanation quotes (a small LLM asked for it wrote empty or wrong sentences)."""
        clause = quoted_clause(job.result.explanation or "", job.pieces)
        if clause is None:
            return ""
        rest = occlusion.without(scrubbed, clause)
        if not any(ch.isalnum() for ch in rest):  # the clause is the whole post: no reading of the rest to report
            return ""
        labels, _ = run.models[job.task.id].predict([classifier_view(rest)])[0]
        if set(labels) == set(job.labels):
            return f"即使去掉这句，分类器仍判为「{decided_names(job.task, job.labels)}」：帖子的其他内容也支持这一判断。"
        return f"如果去掉这句，分类器会改判为「{decided_names(job.task, labels)}」。"

    def _jobs(self, run: Run, per_post: PerPost, scrubbed: Sequence[str], originals: Sequence[str]) -> list[_Job]:
        grounded = run.backend.supports_grammar
        jobs = []
        for task, classes, effects in clause_effects(run, scrubbed):
            for i, (pieces, drops) in enumerate(effects):
                result = per_post[i][task.id]
                labels = tuple(label.id for label in result.labels)
                hints = occlusion.supporting_clauses(pieces, drops, classes, labels) \
                    if grounded or run.evidence_hints else []
                quotable = quote_choices(hints or [clause.text for clause in pieces]) if grounded else []
                job = _Job(i, task, labels, [], result, classes, pieces, drops,
                           explanation_grammar(task, labels, quotable, ask_change=False) if quotable else None)
                # nothing evident (no LLM, no risk wording), or nothing in the post to quote: the attribution
                if attribution.is_none_answer(task, result) or (grounded and not quotable):
                    self._show_attribution(job, originals[i], "attribution")
                    continue
                job.messages = teacher_messages(task, scrubbed[i], labels, hints=hints, grounded=grounded,
                                                ask_change=False, few_shots=() if grounded else builtin_few_shots(task))
                jobs.append(job)
        return jobs

    @staticmethod
    def _record(run: Run, job: _Job, reply: GenerationResult, attempt: int, scrubbed: str, original: str) -> bool:
        """Store an attempt's explanation; True when it fails its checks and may be redrawn."""
        explanation = scrub_output(clean_explanation(reply.text)) if reply.ok else None
        verdict = verdict_on(run.models, job.task, job.labels, explanation, scrubbed)
        # Any failed check is redrawn: one that is only shown as a fallback (a definition read back, a label said
        # not to fit) wastes the LLM as much as one that argues another label.
        disagrees = not verdict.passed
        result = job.result
        result.attempts = attempt + 1
        result.model = run.backend.model_id
        if explanation or result.explanation is None:
            result.explanation = explanation or None
            result.explanation_source = "llm_grounded" if job.grammar is not None else "llm"
            result.evidence = evidence_spans(explanation, original)
            result.verifier_agrees = verdict.checks.get("verifier")
            result.verifier_reader = verdict.read_by.get("verifier")
            result.qc_passed, result.qc_reasons = verdict.passed, verdict.reasons
            result.error = reply.error or (None if explanation else "empty explanation")
        return disagrees

    @staticmethod
    def _fall_back(job: _Job, original: str) -> None:
        """Every LLM attempt failed its checks: show the attribution sentence instead, and say why."""
        result = job.result
        why = "; ".join(result.qc_reasons) or result.error or ("the verifier reads another label"
                                                              if result.verifier_agrees is False else "no explanation")
        HybridEngine._show_attribution(job, original, "attribution_fallback")
        result.fallback_reason = f"the LLM's explanation ({result.attempts} attempt(s)) failed its checks: {why}"

    @staticmethod
    def _show_attribution(job: _Job, original: str, source: ExplanationSource) -> None:
        """The attribution sentence from the scrubbed post's clause effects, its evidence found in the original
        post; the classifier's own evidence, so nothing for QC or the verifier to judge (as in that engine)."""
        result = job.result
        attribution.explain(job.task, result, job.classes, job.pieces, job.drops)
        result.explanation = scrub_output(result.explanation)
        result.evidence = evidence_spans(result.explanation, original)
        result.verifier_agrees, result.verifier_reader, result.qc_passed, result.qc_reasons = None, None, None, []
        result.explanation_source, result.error = source, None


class LLMEngine(Engine):
    """The LLM's own label and explanation (C-IMHI layout); INVALID answers stay INVALID."""

    name: ClassVar[EngineName] = "llm"
    needs_classifiers = False

    def uses_llm(self, explain: bool) -> bool:
        return True

    def analyse(self, run: Run, batch: Batch) -> PerPost:
        assert batch.scrubbed is not None
        per_post: PerPost = [{} for _ in batch.originals]
        for task in run.classified_tasks:
            for tasks, result in zip(per_post, self._answer(run, task, batch.scrubbed, batch.originals), strict=True):
                tasks[task.id] = result
        return per_post

    @staticmethod
    def _answer(run: Run, task: Task, scrubbed: Sequence[str], originals: Sequence[str]) -> list[TaskResult]:
        prompts = LLMSystem(run.backend, run.backend.model_id, settings=run.settings, with_format_hint=True)
        requests = [GenerationRequest(prompts.messages(task, Post(f"post-{i}", text, (), "analyze")), run.settings)
                    for i, text in enumerate(scrubbed)]
        out = []
        for reply, text, original in zip(run.backend.generate(requests), scrubbed, originals, strict=True):
            parsed = read_answer(task, reply.text)
            explanation = scrub_output(parsed.explanation) if run.explain else None
            verdict = verdict_on(run.models, task, parsed.labels, explanation, text) \
                if explanation and parsed.valid else None
            out.append(TaskResult(
                task=task.id, task_name_zh=task.name_zh, engine="llm", valid=parsed.valid,
                labels=[label_score(task, label, None) for label in parsed.labels], explanation=explanation,
                evidence=evidence_spans(explanation, original), attempts=1,
                verifier_agrees=verdict.checks.get("verifier") if verdict else None,
                verifier_reader=verdict.read_by.get("verifier") if verdict else None,
                model=run.backend.model_id,
                error=reply.error or (None if parsed.valid else "INVALID: no label could be read from the answer")))
        return out


ENGINES: dict[EngineName, Engine] = {engine.name: engine for engine in (
    AttributionEngine(), HybridEngine(), LabelsEngine(), LLMEngine())}


# --- what the engines share ----------------------------------------------------------------------------


def decided_names(task: Task, labels: Sequence[str]) -> str:
    """Decided labels by their Chinese names; an empty decision of a screened task is its "nothing evident"."""
    if not labels and task.screen is not None:
        return task.screen.none_zh
    return label_names(task, labels)


def classifier_view(text: str) -> str:
    """What the classifiers read: instruction-like spans cut out, self-harm spellings folded (normalise.py)."""
    return normalise(strip_injection(text)[0])


def clause_effects(run: Run, texts: Sequence[str]) -> Iterator[tuple[Task, list[str], occlusion.Effects]]:
    """Per task: its classifier's classes and, per post, the clauses with their probability drops."""
    occlusions = occlusion.Occlusions.of(texts, classifier_view)
    for task in run.classified_tasks:
        classifier = run.models[task.id].classifier
        yield task, list(classifier.classes), occlusions.effects(classifier.predict_proba)


def verdict_on(models: Mapping[str, TaskModel], task: Task, labels: Sequence[str], explanation: str | None,
               post: str) -> Verdict:
    """QC of an explanation for ``labels``, with the task's TF-IDF verifier when its model has one."""
    verdict = check_sample(task, labels, explanation, post)
    model = models.get(task.id)
    reader = model.tfidf if model is not None else None
    if explanation and reader is not None:
        apply_verifier(task, TfidfVerifier(reader), [(labels, explanation)], [verdict])
    return verdict


def _normalised_with_offsets(text: str) -> tuple[str, list[int]]:
    """The QC normal form (NFKC, lower case, letters and digits only) and each character's original offset."""
    chars, offsets = [], []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKC", ch).lower():
            if c.isalnum():
                chars.append(c)
                offsets.append(i)
    return "".join(chars), offsets


def evidence_spans(explanation: str | None, post: str) -> list[EvidenceSpan]:
    """Where each quoted piece of the explanation occurs in the original post (exact, else up to QC normalisation).

    Quotes that are not in the post (label names, paraphrases, scrubbed placeholders) get no span.
    """
    if not explanation:
        return []
    norm, offsets = _normalised_with_offsets(post)
    spans: list[EvidenceSpan] = []
    for quote in dict.fromkeys(evidence_quotes(explanation)):
        start = post.find(quote)
        if start >= 0:
            spans.append(EvidenceSpan(quote=quote, start=start, end=start + len(quote)))
            continue
        key = _normalised_with_offsets(quote)[0]
        at = norm.find(key) if key else -1
        if at >= 0:
            begin, end = offsets[at], offsets[at + len(key) - 1] + 1
            spans.append(EvidenceSpan(quote=post[begin:end], start=begin, end=end))
    return sorted(spans, key=lambda s: s.start)


def scrub_output(text: str | None) -> str | None:
    """A backstop: a model could still invent a phone number or handle; exports must not carry one."""
    return scrub(text, names=False).text if text else text


def label_score(task: Task, label_id: str, confidence: float | None) -> LabelScore:
    label = task.label(label_id)
    return LabelScore(id=label.id, name_zh=label.zh, name_en=label.en,
                      confidence=None if confidence is None else round(confidence, 4))
