"""The LLM judge with the scripted fake backend: parsing, invalid answers, PII scrubbing, the cache, the files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mentalglm.backends import registry
from mentalglm.backends.fake import FakeBackend
from mentalglm.data.records import Post
from mentalglm.errors import ConfigError
from mentalglm.evaluate.judge import (
    CRITERIA,
    Judge,
    JudgedAnswer,
    judge_messages,
    parse_judgement,
    prompt_text,
    rubric,
)
from mentalglm.instruct.generate import ResultCache
from mentalglm.tasks import get_task

TASK = get_task("suicide_risk")


def reply(a: int, b: int, c: int, d: int, extra: str = "") -> str:
    return json.dumps(dict(zip(CRITERIA, (a, b, c, d), strict=True)) | {"reason": "引用了原话"}, ensure_ascii=False) + extra


@pytest.mark.parametrize(("text", "scores", "parsed_by"), [
    (reply(4, 5, 3, 5), (4, 5, 3, 5), "json"),
    ("好的，评分如下：\n```json\n" + reply(2, 3, 4, 5) + "\n```\n希望有帮助。", (2, 3, 4, 5), "json"),
    ('{"label_consistency": "4", "evidence_grounding": 5.0, "clinical_plausibility": 3, "fluency": 5}',
     (4, 5, 3, 5), "json"),
    ("{'label_consistency': 4, 'evidence_grounding': 5, 'clinical_plausibility': 3, 'fluency': 2}",
     (4, 5, 3, 2), "flexible"),  # not JSON (single quotes): read by the flexible filter and counted apart
])
def test_scores_are_read_from_json_or_flexibly(text: str, scores: tuple[int, ...], parsed_by: str) -> None:
    got, how, reason = parse_judgement(text)
    assert got == dict(zip(CRITERIA, scores, strict=True)) and how == parsed_by and reason is None


@pytest.mark.parametrize(("text", "reason"), [
    (reply(4, 6, 3, 5), "evidence_grounding=6"),
    (reply(0, 5, 3, 5), "label_consistency=0"),
    ('{"label_consistency": 4.5, "evidence_grounding": 5, "clinical_plausibility": 3, "fluency": 5}', "=4.5"),
    ('{"label_consistency": true, "evidence_grounding": 5, "clinical_plausibility": 3, "fluency": 5}', "=True"),
    ('{"label_consistency": 4, "evidence_grounding": 5, "fluency": 5}', "missing clinical_plausibility"),
    ('{"label_consistency": 4, "evidence_grounding": 5, "clinic', "missing clinical_plausibility, fluency"),
    ("这段解释写得很好，我给满分。", "no JSON object"),
    ("", "empty answer"),
])
def test_unusable_answers_are_invalid_with_a_reason(text: str, reason: str) -> None:
    scores, how, why = parse_judgement(text)
    assert scores is None and how == "invalid" and why is not None and reason in why


def test_rubric_file_is_versioned_and_fills_every_field() -> None:
    template = rubric()
    assert isinstance(template["version"], int) and template["scale"] == [1, 5]
    answer = JudgedAnswer("p1", "药已经攒够了，周末就结束。", "帖子中“药已经攒够了”说明已有准备。", ("high",))
    system, user = judge_messages(TASK, answer)
    assert system["role"] == "system" and "JSON" in system["content"]
    content = user["content"]
    assert "高自杀风险" in content and TASK.label("high").definition_zh in content and "低自杀风险" not in content
    assert "“药已经攒够了，周末就结束。”" in content and answer.explanation in content
    assert '{"label_consistency": 分数' in content and "{post}" not in content and "{{" not in content


PII_POST = "我叫张伟，电话13812345678，@小红 我真的撑不下去了"
PII_EXPLANATION = "帖子写道“我真的撑不下去了”，还@小红 留下电话13812345678，风险高。"


def test_post_and_explanation_are_scrubbed_before_the_judge_sees_them(tmp_path: Path) -> None:
    backend = FakeBackend(default=reply(5, 5, 5, 5))
    Judge(backend, ResultCache(tmp_path / "c.jsonl")).judge(TASK, [JudgedAnswer("p", PII_POST, PII_EXPLANATION, ("high",))])
    sent = "\n".join(m["content"] for m in backend.requests[0].messages)
    assert "13812345678" not in sent and "@小红" not in sent and "张伟" not in sent
    assert sent.count("[电话]") == 2 and sent.count("@[用户]") == 2 and "我真的撑不下去了" in sent
    raw = JudgedAnswer("p", PII_POST, PII_EXPLANATION, ("high",))
    assert "13812345678" in judge_messages(TASK, raw, scrub_pii=False)[1]["content"]


ANSWERS = [JudgedAnswer("a", "甲帖子：活着好累", "帖子说“活着好累”。", ("low",)),
           JudgedAnswer("b", "乙帖子：药攒够了", "帖子说“药攒够了”。", ("high",)),
           JudgedAnswer("c", "丙帖子：今天下雨", "帖子说“今天下雨”。", ("low",))]
SCRIPT = {"甲帖子": reply(4, 4, 5, 3), "乙帖子": "评分：很好", "丙帖子": reply(5, 9, 5, 5)}


def test_invalid_answers_are_counted_not_dropped(tmp_path: Path) -> None:
    from mentalglm.evaluate.judge import summarise

    verdicts = Judge(FakeBackend(responses=SCRIPT), ResultCache(tmp_path / "c.jsonl")).judge(TASK, ANSWERS)
    assert [v.id for v in verdicts] == ["a", "b", "c"] and [v.valid for v in verdicts] == [True, False, False]
    assert "fluency" not in (verdicts[2].reason or "") and "evidence_grounding=9" in (verdicts[2].reason or "")
    summary = summarise(verdicts)
    assert (summary["n_judged"], summary["n_valid"], summary["n_invalid"]) == (3, 1, 2)
    assert summary["invalid_rate"] == pytest.approx(2 / 3)
    assert summary["mean"] == dict(zip(CRITERIA, (4.0, 4.0, 5.0, 3.0), strict=True))
    assert summary["overall"] == pytest.approx(4.0)


def test_the_cache_resumes_and_failures_are_retried(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"

    def flaky(request: Any) -> str:
        if "乙帖子" in request.messages[-1]["content"]:
            raise TimeoutError("judge did not answer")
        return reply(4, 4, 4, 4)

    first = Judge(FakeBackend(responses=flaky), ResultCache(path)).judge(TASK, ANSWERS)
    assert [v.parsed_by for v in first] == ["json", "failed", "json"] and "TimeoutError" in (first[1].reason or "")
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2  # the failure is not cached
    again = FakeBackend(default=reply(3, 3, 3, 3))
    second = Judge(again, ResultCache(path)).judge(TASK, ANSWERS)
    assert again.calls == 1 and [v.cached for v in second] == [True, False, True]
    assert [v.scores["fluency"] for v in second if v.scores] == [4, 3, 4]
    silent = FakeBackend(default=None)  # any request would fail: everything comes from the cache
    third = Judge(silent, ResultCache(path)).judge(TASK, ANSWERS)
    assert silent.calls == 0 and all(v.cached and v.valid for v in third)
    other = FakeBackend("other-judge", default=reply(1, 1, 1, 1))  # another judge model is another key
    assert Judge(other, ResultCache(path)).judge(TASK, ANSWERS[:1])[0].scores == dict.fromkeys(CRITERIA, 1)


def test_limit_takes_a_seeded_sample_in_file_order(tmp_path: Path) -> None:
    judge = Judge(FakeBackend(), ResultCache(tmp_path / "c.jsonl"), limit=2, seed=3)
    chosen = judge.select(ANSWERS)
    assert len(chosen) == 2 and chosen == sorted(chosen, key=ANSWERS.index) and chosen == judge.select(ANSWERS)
    assert Judge(FakeBackend(), judge.cache, limit=5).select(ANSWERS) == ANSWERS


POSTS = [Post("a", "甲帖子：活着好累", ("low",), "toy"), Post("b", "乙帖子：药攒够了", ("high",), "toy"),
         Post("c", "丙帖子：今天下雨", ("low",), "toy"), Post("d", "丁帖子：没有解释", ("low",), "toy")]


def _row(post: Post, explanation: str | None, pred: list[str] | None) -> dict[str, Any]:
    return {"id": post.id, "task": TASK.id, "split": "test", "prompt": "", "raw_output": "", "gold": list(post.labels),
            "pred_strict": pred or [], "pred_flexible": pred or [], "valid_strict": pred is not None,
            "valid_flexible": pred is not None, "explanation": explanation, "latency_s": 0.1, "system": "toy"}


def _predictions(tmp_path: Path) -> Path:
    rows = [_row(POSTS[0], "帖子说“活着好累”。", ["low"]), _row(POSTS[1], "帖子说“药攒够了”。", None),
            _row(POSTS[2], "帖子说“今天下雨”。", ["low"]), _row(POSTS[3], None, ["low"])]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_results_json_judge_files_and_report(tmp_path: Path) -> None:
    from mentalglm.evaluate.report import load_results, write_report
    from mentalglm.evaluate.runner import evaluate_file, index_of

    judge = Judge(FakeBackend(responses=SCRIPT), ResultCache(tmp_path / "cache.jsonl"), spec="fake:scripted")
    (results,) = evaluate_file(_predictions(tmp_path), index=index_of({"test": POSTS}), n_resamples=0,
                               bertscore=None, judge=judge)
    judged = json.loads(results.read_text(encoding="utf-8"))["metrics"]["judge"]
    # b has no valid label (not judged, counted), d no explanation: a and c are judged, c's answer is invalid
    assert (judged["n_explained"], judged["n_without_label"], judged["n_judged"]) == (3, 1, 2)
    assert (judged["n_valid"], judged["n_invalid"], judged["invalid_rate"]) == (1, 1, 0.5)
    assert judged["mean"]["fluency"] == 3.0 and judged["prompt_version"] == rubric()["version"]
    assert judged["judge"] == "fake:scripted" and judged["scrub_pii"] is True
    rows = [json.loads(line) for line in Path(judged["scores_file"]).read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["valid"]) for r in rows] == [("a", True), ("c", False)]
    assert "帖子" not in Path(judged["scores_file"]).read_text(encoding="utf-8")  # ids and scores, no post text
    assert Path(judged["scores_file"]).name == "p.results.judge_scores.jsonl"
    assert Path(judged["prompt_file"]).read_text(encoding="utf-8") == prompt_text()
    assert yaml.safe_load(Path(judged["prompt_file"]).read_text(encoding="utf-8"))["version"] == judged["prompt_version"]
    markdown, _ = write_report(load_results([results]), tmp_path / "report")
    text = markdown.read_text(encoding="utf-8")
    assert f"| toy | fake:scripted (rubric v{judged['prompt_version']}) | 1 / 2 | 0.500 | 4.00 | 4.00 | 5.00 | 3.00 | 4.00 |" \
        in text


def test_the_judge_needs_the_posts(tmp_path: Path) -> None:
    from mentalglm.evaluate.runner import evaluate_file

    judge = Judge(FakeBackend(), ResultCache(tmp_path / "c.jsonl"))
    with pytest.raises(ConfigError, match="needs the posts"):
        evaluate_file(_predictions(tmp_path), index=None, judge=judge)


def test_evaluate_command_with_judge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mentalglm.cli import app
    from mentalglm.evaluate import runner

    made: list[FakeBackend] = []

    def scripted(model: str) -> FakeBackend:
        made.append(FakeBackend(model, default=reply(5, 4, 3, 2)))
        return made[-1]

    monkeypatch.setitem(registry._REGISTERED, "scripted", scripted)
    monkeypatch.setattr(runner, "split_index", lambda data_dir=None: runner.index_of({"test": POSTS}))
    predictions = _predictions(tmp_path)
    args = ["evaluate", str(predictions), "--resamples", "0", "--bertscore", "none", "--judge", "scripted:j1",
            "--judge-limit", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    judged = json.loads((tmp_path / "p.results.json").read_text(encoding="utf-8"))["metrics"]["judge"]
    assert judged["n_judged"] == 1 and judged["limit"] == 1 and judged["spec"] == "scripted:j1"
    assert judged["mean"] == dict(zip(CRITERIA, (5.0, 4.0, 3.0, 2.0), strict=True)) and made[0].calls == 1
    assert (tmp_path / "p.judge_cache.jsonl").is_file() and (tmp_path / "p.results.judge_prompt.yaml").is_file()
    rerun = CliRunner().invoke(app, [*args[:-1], "2"])  # one more answer: only that one is asked
    assert rerun.exit_code == 0, rerun.output
    assert made[1].calls == 1 and json.loads((tmp_path / "p.results.json").read_text(encoding="utf-8"))[
        "metrics"]["judge"]["n_cached"] == 1
