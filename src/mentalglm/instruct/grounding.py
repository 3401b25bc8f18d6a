"""Grounded LLM explanations: a grammar, built per post, under which the LLM can only quote the post and only
state the label it was given.

A small LLM asked to "quote the post" recalls text that is not there and argues for labels it was not given
(issue 17: the README's own hybrid explanation of a low-risk post argued suicide risk and quoted nothing). Under
llama.cpp's GBNF grammar the reply has a fixed shape:

    判断为「低自杀风险」：帖子中写道“<one of the clauses the classifier relied on, copied>”，<why>。如果<what would
    change the reading>。

The label sentence is a literal of the grammar, so the explanation always states the decided label; the quote is a
choice among the post's own clauses (attribution's evidence for the decided labels, or every clause when the
classifier relied on none), so it is copied, never recalled; the free text may hold no quotation marks, so it cannot
quote anything else. What the grammar cannot stop (prose that argues the wrong features) is left to the checks
the engine runs afterwards, which regenerate or fall back to the attribution sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mentalglm.backends.base import GenerationSettings
from mentalglm.data.pii import PLACEHOLDERS
from mentalglm.tasks import Task
from mentalglm.tasks.layout import label_names

# Clause boundaries: Chinese and Western clause punctuation, line breaks, and spaces next to Chinese text
# (Weibo posts often separate clauses with a space; spaces between English words do not cut).
_BOUNDARY = re.compile(r"[，。！？；：,.!?;:…~～\n\r]+|(?<=[^\x00-\x7f])\s+|\s+(?=[^\x00-\x7f])")
MAX_UNITS = 40  # longer posts merge neighbouring clauses into this many units (bounded cost per post)
MAX_QUOTE_CHARS = 60  # a longer clause is offered cut at this length (still a substring of the post)
# Free text: any character but quotation marks (single ones too: the 1.5B teacher wrote "如‘废物’" of a post
# without that word), sentence ends and line breaks, so one sentence, quoting nothing.
_PROSE_CHAR = r"""[^“”"「」『』《》‘’'\n\r。！？!?]"""
REASON_CHARS = (8, 60)
CHANGE_CHARS = (4, 56)  # at 36 the teacher's 如果-sentences were cut mid-clause ("…那么判断就。")
# Tokens the shape needs at most (Qwen: ~1 token per 1-1.5 Chinese characters), so replies are never cut short.
MAX_NEW_TOKENS = 192


@dataclass(frozen=True)
class Clause:
    """A clause of a post and where it is: what attribution removes and what a grounded explanation quotes."""

    start: int
    end: int
    text: str


def clauses(text: str, max_units: int = MAX_UNITS) -> list[Clause]:
    """The post's clauses with ``[start, end)`` offsets into ``text``, surrounding spaces trimmed."""
    pieces: list[Clause] = []
    at = 0
    for match in [*_BOUNDARY.finditer(text), None]:
        end = match.start() if match else len(text)
        piece = text[at:end]
        stripped = piece.strip()
        if stripped:
            start = at + piece.index(stripped)
            pieces.append(Clause(start, start + len(stripped), stripped))
        at = match.end() if match else len(text)
    if len(pieces) <= max_units:
        return pieces
    size = -(-len(pieces) // max_units)
    merged = []
    for i in range(0, len(pieces), size):
        group = pieces[i:i + size]
        merged.append(Clause(group[0].start, group[-1].end, text[group[0].start:group[-1].end]))
    return merged


# The grammar's own words around the verdict and the quote (QC's verifier reads past them: instruct/qc.py).
STATES, QUOTES = "判断为", "帖子中写道"


def label_statement(task: Task, labels: Sequence[str]) -> str:
    """The sentence every grounded explanation starts with: the decided label(s) by name."""
    return f"{STATES}「{label_names(task, labels)}」："


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal (backslash, quote and line breaks escaped)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


# A quote must read as one quotation in the explanation and occur in the original post too: clauses are cut at
# quotation marks (a nested quote ends the explanation's quotation early) and at PII placeholders (the scrubbed
# post the LLM reads has "[电话]" where the original has the number).
_UNQUOTABLE = re.compile("|".join([r'[“”"「」『』‘’]', *(re.escape(p) for p in PLACEHOLDERS.values())]))
MIN_QUOTE_CHARS = 2
# Shorter quotes are offered only when a post has nothing longer: given "对啊" or a name beside real clauses, the
# 1.5B teacher chose them and then had nothing to explain (read in the grounded build's rejected drafts).
INFORMATIVE_QUOTE_CHARS = 4


def quote_choices(clauses: Sequence[str]) -> list[str]:
    """The post's clauses as offered to the LLM: the parts without quotation marks or PII placeholders, unique,
    non-trivial (INFORMATIVE_QUOTE_CHARS long where the post has such parts), at most MAX_QUOTE_CHARS long."""
    out: list[str] = []
    for clause in clauses:
        for part in _UNQUOTABLE.split(clause):
            piece = part.strip()[:MAX_QUOTE_CHARS].strip()
            if len(piece) >= MIN_QUOTE_CHARS and piece not in out:
                out.append(piece)
    informative = [piece for piece in out if len(piece) >= INFORMATIVE_QUOTE_CHARS]
    return informative or out


def quotable_part(text: str) -> str:
    """The longest piece of a clause that can be quoted (see quote_choices); the clause itself when none is."""
    return max(quote_choices([text]), key=len, default=text)


def explanation_grammar(task: Task, labels: Sequence[str], clauses: Sequence[str], *, ask_change: bool = True) -> str:
    """The GBNF grammar of one grounded explanation; ``clauses`` must come from the post itself.

    ``ask_change=False`` ends after the reason: the hybrid engine measures what would change the reading (the
    classifier's decision without the quoted clause) instead of letting a small LLM guess it.
    """
    choices = quote_choices(clauses)
    if not choices:
        raise ValueError("a grounded explanation needs at least one clause of the post to quote")
    low, high = REASON_CHARS
    change_low, change_high = CHANGE_CHARS
    root = f'root ::= {gbnf_literal(label_statement(task, labels) + QUOTES + "“")} quote "”，" reason "。"'
    rules = [root + (" change" if ask_change else ""),
             "quote ::= " + " | ".join(gbnf_literal(choice) for choice in choices),
             f"reason ::= prose{{{low},{high}}}"]
    if ask_change:
        rules.append(f'change ::= "如果" prose{{{change_low},{change_high}}} "。"')
    return "\n".join([*rules, f"prose ::= {_PROSE_CHAR}"])


_QUOTATION = re.compile(QUOTES + r"“([^”]+)”")  # the quotation a grounded explanation's layout writes


def quoted_clause(explanation: str, pieces: Sequence[Clause]) -> Clause | None:
    """The clause of ``pieces`` a grounded explanation quotes (its quote is a cut of one of them)."""
    match = _QUOTATION.search(explanation)
    if match is None:
        return None
    return next((clause for clause in pieces if match.group(1) in clause.text), None)


def without_change(explanation: str) -> str:
    """A grounded explanation without its closing 如果-sentence (what would change the reading), looked for after the
    quotation: a long post's merged clause may itself hold "。如果"."""
    quoted = _QUOTATION.search(explanation)
    at = explanation.find("。如果", quoted.end() if quoted else 0)
    return explanation[:at + 1] if at >= 0 else explanation


def reason_only(task: Task, labels: Sequence[str], explanation: str) -> str:
    """The explanation without its label sentence: what the prose alone says (the verifier's harder reading)."""
    statement = label_statement(task, labels)
    return explanation[len(statement):] if explanation.startswith(statement) else explanation


def grounded_settings(settings: GenerationSettings, task: Task, grammar: str, post: str) -> GenerationSettings:
    """Decoding settings of one grounded explanation: its grammar, room for its shape, and the copy guard against
    reading back the task's definitions, its labels' examples or the post beyond its quotation (backends/copy_guard.py;
    QC rejects copied definitions and posts; a copied example would state what the post does not say)."""
    definitions = tuple(text for label in task.labels for text in (label.definition_zh, label.example_zh) if text)
    return replace(settings, grammar=grammar, max_new_tokens=max(settings.max_new_tokens, MAX_NEW_TOKENS),
                   avoid_copying=(*definitions, post))
