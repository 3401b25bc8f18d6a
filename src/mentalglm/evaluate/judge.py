"""An LLM judge of explanations: a Chinese rubric, scores 1-5 on four criteria, through any backend.

    mentalglm evaluate outputs/predictions/sos4k.test.qwen.jsonl --judge openai:gpt-4o --judge-limit 100

The rubric (``prompts/judge.yaml``, versioned) asks for label consistency (does the explanation support the
model's *own* label), evidence grounding (does it quote the post, without inventing), clinical plausibility
(no diagnosis language, risk neither inflated nor played down) and fluency, as one strict JSON object.

* Answers are parsed as lm-evaluation-harness parses answers: a JSON object anywhere in the reply (code
  fences and prose around it are tolerated) is ``json``; failing that, ``"criterion": digit`` pairs are
  read as ``flexible`` and counted apart. An answer without all four integers in 1..5 is *invalid*: it is
  counted and its reason kept, never dropped or mapped to a middle score. A failed request (backend error)
  is counted as failed, not cached, and retried by the next run.
* Post and explanation (which quotes the post) are PII-scrubbed (``data.pii.scrub``) before they are put
  in the prompt: the judge is often a remote API.
* Requests are cached by content hash (prompt, judge model, settings) in an append-only JSONL
  (``instruct.generate.ResultCache``), so a killed or extended run re-asks nothing it already has.
* Per-answer scores go to ``RESULTS.judge_scores.jsonl`` (ids and scores only: no post text, so it may sit
  beside committed results), the exact rubric file to ``RESULTS.judge_prompt.yaml``, the means with their
  counts and the invalid rate into the results JSON. The raw replies stay in the cache (keep it out of git).

LLM judges prefer longer answers and answers in their own style, and agree with experts imperfectly:
report the judge and the rubric version with every number (docs/evaluation-explanations.md).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mentalglm.backends.base import (
    Backend,
    GenerationRequest,
    GenerationResult,
    GenerationSettings,
    cache_key,
)
from mentalglm.data.pii import scrub
from mentalglm.data.records import Post
from mentalglm.files import atomic_write_text, write_jsonl
from mentalglm.instruct.generate import ResultCache
from mentalglm.tasks.layout import LABEL_SEPARATOR
from mentalglm.tasks.schema import Task

PROMPT_FILE = "judge.yaml"
CRITERIA = ("label_consistency", "evidence_grounding", "clinical_plausibility", "fluency")
JUDGE_SETTINGS = GenerationSettings(temperature=0.0, max_new_tokens=256, seed=0)


def prompt_text() -> str:
    return (resources.files("mentalglm.evaluate") / "prompts" / PROMPT_FILE).read_text(encoding="utf-8")


@cache
def rubric() -> dict[str, Any]:
    template = yaml.safe_load(prompt_text())
    if tuple(template["criteria"]) != CRITERIA:
        raise ValueError(f"prompts/{PROMPT_FILE}: criteria {list(template['criteria'])} differ from {list(CRITERIA)}")
    return template


@dataclass(frozen=True)
class JudgedAnswer:
    """One explanation put to the judge: the post it explains and the labels its answer chose."""

    id: str
    post: str
    explanation: str
    labels: tuple[str, ...]


def judge_messages(task: Task, answer: JudgedAnswer, *, scrub_pii: bool = True) -> list[dict[str, str]]:
    """The rubric's chat messages for one answer, post and explanation scrubbed of personal data."""
    template = rubric()
    post, explanation = answer.post, answer.explanation
    if scrub_pii:
        post, explanation = scrub(post).text, scrub(explanation).text
    labels = [task.label(label_id) for label_id in answer.labels]
    user = template["user"].format(
        task_name=task.name_zh, task_description=task.description_zh,
        labels=LABEL_SEPARATOR.join(label.zh for label in labels),
        label_definitions="\n".join(f"- {label.zh}：{label.definition_zh}" for label in labels),
        post=post, explanation=explanation)
    return [{"role": "system", "content": template["system"].strip()}, {"role": "user", "content": user}]


# --- parsing ---------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_PAIR = re.compile("[\"']?(" + "|".join(CRITERIA) + ")[\"']?\\s*[:：=]\\s*[\"']?(\\d+(?:\\.\\d+)?)")


def _json_objects(text: str) -> list[dict[str, Any]]:
    objects = []
    for match in re.finditer(r"\{", text):
        try:
            value, _ = _DECODER.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            objects.append(value)
    return objects


def _as_score(value: Any, low: int, high: int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.0+)?\s*", value):
        value = float(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and low <= value <= high else None


def _shown(value: Any) -> str:
    """A short value in a reason; long text (which may quote the post) is not copied into the scores file."""
    shown = repr(value)
    return shown if len(shown) <= 12 else f"<{type(value).__name__} of {len(str(value))} characters>"


def _check(values: Mapping[str, Any], low: int, high: int) -> tuple[dict[str, int] | None, str | None]:
    missing = [c for c in CRITERIA if c not in values]
    if missing:
        return None, f"missing {', '.join(missing)}"
    scores = {c: _as_score(values[c], low, high) for c in CRITERIA}
    bad = [f"{c}={_shown(values[c])}" for c in CRITERIA if scores[c] is None]
    if bad:
        return None, f"not an integer from {low} to {high}: {', '.join(bad)}"
    return {c: int(s) for c, s in scores.items() if s is not None}, None


def parse_judgement(text: str) -> tuple[dict[str, int] | None, str, str | None]:
    """(scores, how they were read: json | flexible | invalid, why invalid)."""
    low, high = rubric()["scale"]
    objects = [o for o in _json_objects(text) if any(c in o for c in CRITERIA)]
    if objects:
        scores, reason = _check(objects[0], low, high)
        return (scores, "json", None) if scores else (None, "invalid", reason)
    pairs: dict[str, str] = {}
    for name, value in _PAIR.findall(text):
        pairs.setdefault(name, value)
    if not pairs:
        return None, "invalid", "no JSON object and no rubric scores in the answer" if text.strip() else "empty answer"
    scores, reason = _check(pairs, low, high)
    return (scores, "flexible", None) if scores else (None, "invalid", reason)


# --- judging ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The judge's scores of one explanation, or why there are none."""

    id: str
    key: str
    scores: dict[str, int] | None
    parsed_by: str  # json | flexible | invalid | failed
    reason: str | None = None
    cached: bool = False

    @property
    def valid(self) -> bool:
        return self.scores is not None

    def to_row(self) -> dict[str, Any]:
        return {"id": self.id, "valid": self.valid, **asdict(self)}


def _verdict(answer: JudgedAnswer, key: str, record: Mapping[str, Any], cached: bool) -> Verdict:
    if record.get("error"):
        return Verdict(answer.id, key, None, "failed", str(record["error"]), cached)
    scores, parsed_by, reason = parse_judgement(str(record.get("text") or ""))
    return Verdict(answer.id, key, scores, parsed_by, reason, cached)


@dataclass
class Judge:
    """A backend with the rubric, its cache, and how many answers of a group it judges."""

    backend: Backend
    cache: ResultCache
    spec: str = ""
    limit: int | None = None
    seed: int = 0
    settings: GenerationSettings = JUDGE_SETTINGS
    scrub_pii: bool = True
    batch_size: int = 8

    def judge(self, task: Task, answers: Sequence[JudgedAnswer]) -> list[Verdict]:
        """One verdict per answer, in order: cached replies reused, new ones cached as they arrive."""
        verdicts: dict[int, Verdict] = {}
        pending: list[tuple[int, str, GenerationRequest]] = []
        for i, answer in enumerate(answers):
            request = GenerationRequest(judge_messages(task, answer, scrub_pii=self.scrub_pii), self.settings)
            key = cache_key(request.messages, self.backend.model_id, self.settings)
            record = self.cache.get(key)
            if record is not None:
                verdicts[i] = _verdict(answer, key, record, cached=True)
            else:
                pending.append((i, key, request))
        def keep(j: int, result: GenerationResult) -> None:
            i, key, _ = pending[j]
            record = {"post_id": answers[i].id, "task": task.id, "model": self.backend.model_id,
                      "prompt_version": rubric()["version"], "text": result.text, "error": result.error,
                      "finish_reason": result.finish_reason, "latency_s": result.latency_s}
            if result.error is None:  # failures are not cached: a later run retries them
                self.cache.put(key, record)
            verdicts[i] = _verdict(answers[i], key, record, cached=False)

        # Streamed, so a server backend keeps its `concurrency` requests in flight; cached as each answer arrives.
        for _ in self.backend.generate_iter([request for _, _, request in pending], batch_size=self.batch_size,
                                            on_result=keep):
            pass
        return [verdicts[i] for i in range(len(answers))]

    def select(self, answers: Sequence[JudgedAnswer]) -> list[JudgedAnswer]:
        """All answers, or a seeded sample of ``limit`` kept in file order."""
        if self.limit is None or self.limit >= len(answers):
            return list(answers)
        chosen = sorted(random.Random(self.seed).sample(range(len(answers)), self.limit))
        return [answers[i] for i in chosen]

    def score_rows(self, task: Task, rows: Sequence[Mapping[str, Any]], posts: Mapping[str, Post],
                   results: Path) -> dict[str, Any]:
        """Judge the explained prediction rows of one results file; write the scores and the rubric beside it."""
        explained = [r for r in rows if str(r.get("explanation") or "").strip()]
        labelled = [JudgedAnswer(str(r["id"]), posts[str(r["id"])].text, str(r["explanation"]),
                                 tuple(r["pred_flexible"])) for r in explained if r["valid_flexible"]]
        chosen = self.select(labelled)
        verdicts = self.judge(task, chosen)
        stem = results.name.removesuffix(".json")
        scores_file = results.with_name(f"{stem}.judge_scores.jsonl")
        prompt_file = results.with_name(f"{stem}.judge_prompt.yaml")
        write_jsonl(scores_file, (v.to_row() for v in verdicts))
        atomic_write_text(prompt_file, prompt_text())
        return {
            "judge": self.backend.model_id, "spec": self.spec or self.backend.model_id,
            "prompt_version": rubric()["version"],
            "prompt_sha256": hashlib.sha256(prompt_text().encode("utf-8")).hexdigest(),
            "settings": asdict(self.settings), "scrub_pii": self.scrub_pii,
            "n_explained": len(explained), "n_without_label": len(explained) - len(labelled),
            "limit": self.limit, "seed": self.seed,
            **summarise(verdicts),
            "scores_file": str(scores_file), "prompt_file": str(prompt_file), "cache": str(self.cache.path),
        }


def summarise(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """Counts and means over the valid verdicts; the invalid rate is over the answers the judge gave."""
    valid = [v.scores for v in verdicts if v.scores is not None]
    invalid = sum(1 for v in verdicts if v.parsed_by == "invalid")
    answered = len(valid) + invalid
    means = {c: sum(s[c] for s in valid) / len(valid) for c in CRITERIA} if valid else None
    return {
        "n_judged": len(verdicts), "n_valid": len(valid), "n_invalid": invalid,
        "invalid_rate": invalid / answered if answered else None,
        "n_failed": sum(1 for v in verdicts if v.parsed_by == "failed"),
        "n_flexible": sum(1 for v in verdicts if v.parsed_by == "flexible"),
        "n_cached": sum(1 for v in verdicts if v.cached),
        "mean": means or dict.fromkeys(CRITERIA),
        "overall": sum(means.values()) / len(means) if means else None,
    }
