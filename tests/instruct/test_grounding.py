"""The grammar of a grounded explanation: label sentence, quote alternatives from the post, no other quotes."""

from __future__ import annotations

import importlib.util
import re

import pytest

from mentalglm.backends import GenerationSettings
from mentalglm.backends.base import cache_key
from mentalglm.instruct.grounding import (
    MAX_QUOTE_CHARS,
    explanation_grammar,
    gbnf_literal,
    label_statement,
    quote_choices,
    reason_only,
)
from mentalglm.tasks import get_task


def test_literals_escape_what_gbnf_would_read_as_syntax() -> None:
    assert gbnf_literal('他说"别管我"\\n') == '"他说\\"别管我\\"\\\\n"'
    assert gbnf_literal("第一行\n第二行") == '"第一行\\n第二行"'


def test_quote_choices_are_unique_non_trivial_and_bounded() -> None:
    long = "很" * (MAX_QUOTE_CHARS + 20)
    assert quote_choices([" 好累 ", "好累", "啊"]) == ["好累"]
    assert quote_choices([" 好累 ", "好累", "啊", long]) == ["很" * MAX_QUOTE_CHARS]  # short ones only when alone
    assert quote_choices(["对啊", "活着好累啊"]) == ["活着好累啊"]


def test_quotes_are_cut_at_quotation_marks_and_pii_placeholders() -> None:
    """A nested quotation would end the explanation's quote early; a placeholder is not in the original post."""
    from mentalglm.instruct.qc import grounded_share

    choices = quote_choices(["他说“别管我了”然后走了", "打我电话[电话]我一直在"])
    assert choices == ["别管我了", "然后走了", "打我电话", "我一直在"]
    assert quote_choices(["他说“别管”"]) == ["他说", "别管"]
    original = "他说“别管我了”然后走了，打我电话13812345678我一直在"
    task = get_task("suicide_risk")
    for choice in choices:
        explanation = f"{label_statement(task, ['low'])}帖子中写道“{choice}”，说明情绪低落。"
        assert grounded_share(explanation, original, task) == 1.0


def test_the_grammar_states_the_label_and_offers_only_the_posts_clauses() -> None:
    task = get_task("suicide_risk")
    grammar = explanation_grammar(task, ["low"], ["活着好累", '他说"算了吧，走了"'])
    root, quote = grammar.splitlines()[:2]
    assert root.startswith(f'root ::= "{label_statement(task, ["low"])}帖子中写道“"')
    assert quote == 'quote ::= "活着好累" | "算了吧，走了"'
    prose = re.search(r"prose ::= (.+)", grammar).group(1)  # type: ignore[union-attr]
    assert all(mark in prose for mark in "“”「」‘’'\"。")  # the free text can neither quote nor end the sentence
    with pytest.raises(ValueError, match="clause"):
        explanation_grammar(task, ["low"], ["啊", " "])


def test_reason_only_drops_the_label_sentence() -> None:
    task = get_task("emotion")
    text = label_statement(task, ["sad"]) + "帖子中写道“好难过”，…"
    assert reason_only(task, ["sad"], text) == "帖子中写道“好难过”，…"
    assert reason_only(task, ["happy"], text) == text


def test_a_grammar_is_part_of_the_cache_key_and_its_absence_changes_no_old_key() -> None:
    messages = [{"role": "user", "content": "帖子"}]
    plain = cache_key(messages, "m", GenerationSettings())
    assert cache_key(messages, "m", GenerationSettings(grammar=None)) == plain
    assert cache_key(messages, "m", GenerationSettings(grammar='root ::= "好"')) != plain


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llama_cpp_parses_the_grammar_with_awkward_clauses() -> None:
    from llama_cpp import LlamaGrammar

    grammar = explanation_grammar(get_task("cognitive_distortion"), ["labeling", "mental_filter"],
                                  ['我就是个"废物"', "C:\\路径", "第一行\n第二行", "[括号]|或者"])
    assert LlamaGrammar.from_string(grammar, verbose=False) is not None


def test_quotable_part_is_the_longest_piece_a_reader_finds_in_the_post() -> None:
    from mentalglm.instruct.grounding import quotable_part

    assert quotable_part("他说“别管我了”然后一个人走了") == "然后一个人走了"
    assert quotable_part("打我电话[电话]") == "打我电话"
    assert quotable_part("好") == "好"  # nothing quotable: the clause as it is


def test_a_measured_change_naming_nothing_evident_is_a_verdict_not_a_missing_quote() -> None:
    from mentalglm.instruct.qc import grounded_share

    task = get_task("cognitive_distortion")
    explanation = "判断为「乱贴标签」：帖子中写道“我就是个废物”，用一个词否定了整个人。如果去掉这句，分类器会改判为「未见明显认知歪曲」。"
    assert grounded_share(explanation, "考试又没过，我就是个废物。", task) == 1.0
    several = "判断为「乱贴标签、以偏概全」：帖子中写道“我就是个废物”，用一个词否定了整个人。"
    assert grounded_share(several, "考试又没过，我就是个废物。", task) == 1.0
