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

from collections.abc import Sequence

from mentalglm.tasks import Task

MAX_QUOTE_CHARS = 60  # a longer clause is offered cut at this length (still a substring of the post)
# Free text: any character but quotation marks, sentence ends and line breaks, so one sentence, quoting nothing.
_PROSE_CHAR = r'[^“”"「」『』《》\n\r。！？!?]'
REASON_CHARS = (8, 60)
CHANGE_CHARS = (4, 36)
# Tokens the shape needs at most (Qwen: ~1 token per 1-1.5 Chinese characters), so replies are never cut short.
MAX_NEW_TOKENS = 192


def label_statement(task: Task, labels: Sequence[str]) -> str:
    """The sentence every grounded explanation starts with: the decided label(s) by name."""
    return f"判断为「{'、'.join(task.label(label).zh for label in labels)}」："


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal (backslash, quote and line breaks escaped)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def quote_choices(clauses: Sequence[str]) -> list[str]:
    """The post's clauses as offered to the LLM: unique, non-trivial, at most MAX_QUOTE_CHARS long."""
    out: list[str] = []
    for clause in clauses:
        piece = clause.strip()[:MAX_QUOTE_CHARS].strip()
        if len(piece) >= 2 and piece not in out:
            out.append(piece)
    return out


def explanation_grammar(task: Task, labels: Sequence[str], clauses: Sequence[str]) -> str:
    """The GBNF grammar of one grounded explanation; ``clauses`` must come from the post itself."""
    choices = quote_choices(clauses)
    if not choices:
        raise ValueError("a grounded explanation needs at least one clause of the post to quote")
    low, high = REASON_CHARS
    change_low, change_high = CHANGE_CHARS
    return "\n".join([
        f'root ::= {gbnf_literal(label_statement(task, labels) + "帖子中写道“")} quote "”，" reason "。" change',
        "quote ::= " + " | ".join(gbnf_literal(choice) for choice in choices),
        f"reason ::= prose{{{low},{high}}}",
        f'change ::= "如果" prose{{{change_low},{change_high}}} "。"',
        f"prose ::= {_PROSE_CHAR}",
    ])


def reason_only(task: Task, labels: Sequence[str], explanation: str) -> str:
    """The explanation without its label sentence: what the prose alone says (the verifier's harder reading)."""
    statement = label_statement(task, labels)
    return explanation[len(statement):] if explanation.startswith(statement) else explanation
