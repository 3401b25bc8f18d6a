"""Label-conditioned explanation generation with a teacher LLM (`mentalglm build`).

The teacher sees the task, the label definitions, the gold label(s) and the post, and writes
a Chinese explanation that quotes the post. Every result is stored in an append-only cache
keyed by a content hash of (prompt, model, settings), so a killed run resumes without
repeating — or re-billing — finished requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from mentalglm.files import JsonlAppender, read_jsonl_lines
from mentalglm.instruct.grounding import clauses, explanation_grammar, grounded_settings, quote_choices
from mentalglm.instruct.occlusion import Occlusions, supporting_clauses
from mentalglm.tasks.layout import REASON_PREFIX, label_names
from mentalglm.tasks.schema import Task

if TYPE_CHECKING:
    from mentalglm.train.classical import Classifier


@cache
def teacher_prompt_template() -> dict[str, Any]:
    path = resources.files("mentalglm.instruct") / "prompts" / "teacher.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class TeacherConfig:
    min_chars: int = 60
    max_chars: int = 200
    # The longest post we send; longer posts are rejected with a reason, never cut silently.
    max_post_chars: int = 1500
    scrub_pii: bool = True
    # Show every label's definition instead of only the gold labels' (see prompts/teacher.yaml).
    all_definitions: bool = False


def supporting_quotes(reader: Classifier, text: str, labels: Sequence[str]) -> list[str]:
    """The clauses of ``text`` whose removal lowers the reader's probability of ``labels`` most (in post order)."""
    pieces, drops = Occlusions.of([text], str).effects(reader.predict_proba)[0]
    return supporting_clauses(pieces, drops, reader.classes, labels)


def teacher_messages(task: Task, post_text: str, labels: Sequence[str], *,
                     few_shots: Sequence[tuple[str, Sequence[str], str]] = (),
                     config: TeacherConfig = TeacherConfig(), hints: Sequence[str] = (),
                     grounded: bool = False, ask_change: bool = True) -> list[dict[str, str]]:
    """Chat messages asking the teacher to justify exactly the gold label(s).

    ``hints`` are pieces of the post worth quoting (the analyzer passes the clauses its classifier relied on);
    ``grounded``: the reply's shape is fixed by a grammar (instruct/grounding.py), so a short prompt says that
    shape instead of the task notes and length range (``ask_change``: the shape ends with a 如果-sentence).
    Without either the prompt is byte-identical to the free-form builder's, so its cache stays valid.
    """
    template = teacher_prompt_template()
    shown = task.labels if config.all_definitions else [task.label(label_id) for label_id in labels]
    definitions = "\n".join(f"- {label.zh}：{label.definition_zh}" for label in shown)
    quotes = "".join(f"“{h}”" for h in hints)
    examples = "".join("\n" + template["grounded_example"].format(example=label.example_zh)
                       for label in map(task.label, labels) if label.example_zh)
    system = template["system"]
    if grounded:
        system = template["grounded_system"]
        user = template["grounded_user"].format(post=post_text, gold_labels=label_names(task, labels),
                                                label_definitions=definitions, label_examples=examples,
                                                quotes=quotes or "（任选帖子中的一句）",
                                                ending=template["grounded_endings"]["change" if ask_change else "reason"])
    else:
        shots = ""
        if few_shots:
            shots = template["few_shot_header"] + "\n\n".join(
                template["few_shot"].format(post=p, gold_labels=label_names(task, ls), explanation=e)
                for p, ls, e in few_shots) + "\n\n"
        user = template["user"].format(
            task_name=task.name_zh, task_description=task.description_zh, label_definitions=definitions,
            post=post_text, gold_labels=label_names(task, labels), few_shots=shots,
            min_chars=config.min_chars, max_chars=config.max_chars)
        if hints:
            user += "\n" + template["hint"].format(quotes=quotes)
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user}]


def builtin_few_shots(task: Task) -> list[tuple[str, Sequence[str], str]]:
    """The invented example the prompt file carries for this task (empty when it has none)."""
    example = teacher_prompt_template().get("examples", {}).get(task.id)
    if not example:
        return []
    return [(example["post"], tuple(str(label) for label in example["labels"]), example["explanation"])]


def clean_explanation(text: str) -> str:
    """Strip what a teacher adds despite the instructions: a label line, a 推理/解释 prefix, wrapping quotes."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("标签：", "标签:", "专家标注", "帖子：“"))]
    out = " ".join(lines).replace("**", "")
    for prefix in (REASON_PREFIX, "推理:", "解释：", "解释:", "理由：", "理由:", "【理由】"):
        if out.startswith(prefix):
            out = out[len(prefix):].strip()
    return out


class ResultCache:
    """Append-only JSONL of finished requests; one line is written (and fsynced) per result.

    A line torn by a kill is cut when the cache opens (``files.read_jsonl_lines``), so the next line is not glued
    onto it; any other unreadable line is skipped and its request simply redone.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, dict[str, Any]] = {}
        self._appender: JsonlAppender | None = None
        if path.exists():
            for line in read_jsonl_lines(path, repair_tail=True):
                if line.error is None:
                    self._records[line.value["key"]] = line.value

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        record = {"key": key, **record}
        if self._appender is None:
            self._appender = JsonlAppender(self.path)
        self._appender.write([record])
        self._records[key] = record


@dataclass
class Draft:
    """One generated explanation for one post, with the request that produced it."""

    post: Post
    task: str
    explanation: str | None
    attempt: int
    key: str
    error: str | None = None
    cached: bool = False
    latency_s: float = 0.0
    raw: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def retry_settings(settings: GenerationSettings, attempt: int) -> GenerationSettings:
    """A rejected explanation is redrawn by sampling (greedy would repeat it) with a new seed."""
    if attempt == 0:
        return settings
    return replace(settings, temperature=max(settings.temperature, 0.7), top_p=min(settings.top_p, 0.9),
                   seed=(settings.seed or 0) + attempt)


def rejection_before_sending(post: Post, config: TeacherConfig) -> str | None:
    text = post.text.strip()
    if not text:
        return "empty post"
    if len(text) > config.max_post_chars:
        return f"post has {len(text)} characters, more than max_post_chars={config.max_post_chars}"
    return None


def generate_explanations(
    task: Task,
    posts: Sequence[Post],
    backend: Backend,
    cache_store: ResultCache,
    *,
    settings: GenerationSettings,
    config: TeacherConfig = TeacherConfig(),
    attempt: int = 0,
    few_shots: Sequence[tuple[str, Sequence[str], str]] = (),
    batch_size: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    grounded: bool = False,
    quote_reader: Classifier | None = None,
) -> Iterator[Draft]:
    """Yield one Draft per post, in post order; cached results are reused, new ones are cached as they arrive.

    Requests stream through ``backend.generate_iter``, so a server backend keeps its ``concurrency`` requests
    in flight; each answer is cached the moment it is back (possibly before earlier ones), so a kill loses
    only the requests in flight. ``attempt`` > 0 asks for a different sample (seed and temperature change)
    when QC rejected an earlier one, and is part of the cache key so retries are cached too. A prompt that
    occurs twice is asked once. ``grounded`` (on a backend that follows grammars): the reply is generated under
    the post's grounded grammar (instruct/grounding.py), so it states the gold label and quotes one of the post's
    own clauses by construction; with a ``quote_reader`` the quotable clauses are those where it reads the gold
    label (clause occlusion, instruct/occlusion.py; every clause where none carries it), offered in the prompt too.
    """
    plan: deque[Draft | tuple[Post, int]] = deque()
    engine_prompts: dict[str, list[dict[str, str]]] = {}  # post id -> the prompt the hybrid engine would send
    sent: list[tuple[Post, str]] = []
    index_of_key: dict[str, int] = {}
    records: dict[int, dict[str, Any]] = {}
    try_settings = retry_settings(settings, attempt)

    def requests() -> Iterator[GenerationRequest]:
        """Read lazily by the backend as it has room, so the PII scrub of the next posts (tens of ms each, on
        the CPU) overlaps the requests in flight instead of adding to them."""
        for post in posts:
            reason = rejection_before_sending(post, config)
            if reason:
                plan.append(Draft(post, task.id, None, attempt, "", error=reason))
                continue
            text = scrub(post.text).text if config.scrub_pii else post.text
            hints = quote_choices(supporting_quotes(quote_reader, text, post.labels)) \
                if grounded and quote_reader else []
            quotable = (hints or quote_choices([clause.text for clause in clauses(text)])) if grounded else []
            messages = teacher_messages(task, text, post.labels, config=config, grounded=bool(quotable),
                                        few_shots=() if quotable else few_shots, hints=hints)
            settings_now = grounded_settings(try_settings, task, explanation_grammar(task, post.labels, quotable),
                                             text) if quotable else try_settings
            if quotable:
                engine_prompts[post.id] = teacher_messages(task, text, post.labels, grounded=True, hints=hints,
                                                           ask_change=False)  # as the engine asks: its defaults
            key = cache_key(messages, backend.model_id, settings_now)
            record = cache_store.get(key)
            if record is not None:
                plan.append(_draft_from_record(post, task, attempt, key, record, cached=True))
            elif key in index_of_key:
                plan.append((post, index_of_key[key]))
            else:
                index_of_key[key] = len(sent)
                plan.append((post, len(sent)))
                sent.append((post, key))
                yield GenerationRequest(messages=messages, settings=settings_now)

    def keep(i: int, result: GenerationResult) -> None:
        post, key = sent[i]
        record = {
            "post_id": post.id, "task": task.id, "model": backend.model_id, "text": result.text,
            "error": result.error, "finish_reason": result.finish_reason, "latency_s": result.latency_s,
            "completion_tokens": result.completion_tokens, "attempt": attempt,
        }
        if result.error is None:  # failures are not cached: a later run retries them
            cache_store.put(key, record)
        records[i] = record
        if on_progress:
            on_progress(1 if result.error is None else 0, 1)

    results = backend.generate_iter(requests(), batch_size=batch_size, on_result=keep)
    exhausted = False
    while plan or not exhausted:
        head = plan[0] if plan else None
        if isinstance(head, Draft):
            plan.popleft()
            if on_progress:
                on_progress(0, 1)
            yield _with_engine_prompt(head, engine_prompts)
        elif head is not None and head[1] in records:
            post, i = plan.popleft()
            first = sent[i][0] is post
            yield _with_engine_prompt(_draft_from_record(post, task, attempt, sent[i][1], records[i],
                                                         cached=not first), engine_prompts)
        else:  # the head waits for its answer, or the next posts have not been read yet
            exhausted = next(results, None) is None


def _with_engine_prompt(draft: Draft, prompts: dict[str, list[dict[str, str]]]) -> Draft:
    """A grounded draft carries the prompt the hybrid engine would send for its post (``engine_prompt``): the
    builder exports it with the accepted explanation as the explaining model's training row."""
    if draft.post.id in prompts:
        draft.meta["engine_prompt"] = prompts[draft.post.id]
    return draft


def _draft_from_record(post: Post, task: Task, attempt: int, key: str, record: dict[str, Any],
                       *, cached: bool) -> Draft:
    raw = record.get("text") or ""
    error = record.get("error")
    explanation = clean_explanation(raw) if not error else None
    return Draft(post, task.id, explanation or None, attempt, key, error=error or (None if explanation else
                 "empty response"), cached=cached, latency_s=float(record.get("latency_s") or 0.0), raw=raw)
