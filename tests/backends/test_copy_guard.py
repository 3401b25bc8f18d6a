"""The decode-time copy guard: which characters may not come next, and the bias it puts on their tokens."""

from __future__ import annotations

import numpy as np

from mentalglm.backends.copy_guard import PENALTY, CopyGuard, comparable, first_character_index
from mentalglm.instruct.qc import MAX_DEFINITION_RUN

DEFINITION = "提到了具体的自杀方法、时间或准备行为，表达了明确的自杀意图"


def test_a_run_shared_with_a_text_may_not_grow_and_punctuation_does_not_hide_it() -> None:
    guard = CopyGuard([DEFINITION], run_chars=10)
    assert comparable("提到了，具体的 自杀方法") == "提到了具体的自杀方法"
    assert guard.avoided("帖子中写道提到了具体的自杀方法") == {"时"}  # ten characters of the definition: stop there
    assert guard.avoided("帖子里提到了，具体的自杀方") == set()  # nine: not yet
    assert guard.avoided("这表明作者很难过") == set()
    assert guard.run_chars < MAX_DEFINITION_RUN  # a run stops growing well before QC would reject the reply


def test_every_occurrence_is_continued_and_short_texts_are_left_out() -> None:
    guard = CopyGuard(["一二三四五六七八九十甲乙", "零一二三四五六七八九十丙", "短文本"], run_chars=10)
    assert guard.avoided("一二三四五六七八九十") == {"甲", "丙"}
    assert CopyGuard(["短文本"], run_chars=10).texts == []


def test_the_processor_biases_only_tokens_that_continue_a_run() -> None:
    pieces = ["时".encode(), "时间".encode(), "这".encode(), b"\xe6", "。".encode()]  # \xe6: half a character
    index = first_character_index(pieces)
    assert set(index) == {"时", "这"} and index["时"].tolist() == [0, 1]
    vocab = {i: p.decode("utf-8", errors="ignore") for i, p in enumerate(pieces)}
    reply = list("提到了具体的自杀方法")  # pretend each character is a token appended after a 3-token prompt
    ids = {ch: 100 + i for i, ch in enumerate(dict.fromkeys(reply))}
    vocab.update({v: k for k, v in ids.items()})
    bias = CopyGuard([DEFINITION]).processor(index, lambda toks: "".join(vocab.get(t, "") for t in toks))
    prompt = np.array([7, 8, 9])
    scores = np.zeros(len(pieces), dtype=np.float32)
    assert not bias(prompt, scores.copy()).any()  # the first call sees the prompt only
    after = bias(np.array([7, 8, 9, *[ids[ch] for ch in reply]]), scores.copy())
    assert after.tolist() == [-PENALTY, -PENALTY, 0.0, 0.0, 0.0]
