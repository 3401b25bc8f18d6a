"""The domain check: a warning on posts unlike a task's training posts, which never changes a decision."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from tiny_analyzer import HIGH, LOW, ORDINARY, TASKS, tiny_models, with_domain_check

from mentalglm.analyze.artifacts import domain_path, load_task_model, save_task_model
from mentalglm.analyze.domain import DomainCheck
from mentalglm.analyze.engine import Analyzer
from mentalglm.errors import MissingDataError


@pytest.fixture(scope="module")
def checked() -> dict:
    return with_domain_check(tiny_models())


def test_similarity_separates_the_training_domain_from_ordinary_posts(checked):
    domain = checked["suicide_risk"].domain
    inside, outside = domain.similarity(HIGH + LOW), domain.similarity(["超市买了水果，主队赢了球赛"])
    assert inside.min() > domain.threshold > outside.max()
    assert domain.outside_rate([]) == 0.0 and domain.similarity([]).shape == (0,)


def test_outside_post_is_warned_and_its_decision_unchanged(checked):
    text = "超市的牛奶和水果都打折，主队赢了球赛"
    plain = Analyzer(TASKS, "labels", models=tiny_models()).analyze(text)
    warned = Analyzer(TASKS, "labels", models=checked).analyze(text)
    risk = warned.tasks["suicide_risk"]
    assert risk.outside_training_domain is True and risk.training_domain_similarity < 0.5
    assert risk.labels == plain.tasks["suicide_risk"].labels and risk.confidences == plain.tasks["suicide_risk"].confidences
    assert warned.high_risk == plain.high_risk
    notice = next(n for n in warned.notices if n.kind == "outside_training_domain")
    assert notice.task == "suicide_risk" and "自杀风险识别" in notice.text and "SOS-HL" in notice.text
    assert warned.tasks["emotion"].outside_training_domain is None  # no check for that task: no claim either way


def test_inside_post_has_no_warning_and_high_risk_keeps_the_crisis_notice(checked):
    result = Analyzer(TASKS, "labels", models=checked).analyze(HIGH[0])
    assert result.tasks["suicide_risk"].outside_training_domain is False
    assert result.high_risk and [n.kind for n in result.notices] == ["not_a_diagnosis", "crisis"]


def test_attribution_engine_also_carries_the_check(checked):
    result = Analyzer(TASKS, "attribution", models=checked).analyze("周末去超市买了水果，主队赢了球赛")
    assert result.tasks["suicide_risk"].outside_training_domain is True
    assert json.loads(result.model_dump_json())["tasks"]["suicide_risk"]["training_domain_similarity"] is not None


def test_saved_check_loads_and_a_card_naming_a_missing_one_is_a_clear_error(checked, tmp_path):
    model = checked["suicide_risk"]
    save_task_model(model, tmp_path)
    loaded = load_task_model("suicide_risk", tmp_path)
    assert loaded.domain is not None and loaded.domain.threshold == 0.5
    assert (loaded.domain.similarity(ORDINARY) == model.domain.similarity(ORDINARY)).all()
    domain_path(tmp_path, "suicide_risk").unlink()
    with pytest.raises(MissingDataError, match="domain check"):
        load_task_model("suicide_risk", tmp_path)
    save_task_model(replace(model, domain=None, card={}), tmp_path)  # an older card: no check, no stale file
    assert load_task_model("suicide_risk", tmp_path).domain is None
    assert not domain_path(tmp_path, "suicide_risk").exists()


def test_needs_both_kinds_of_posts():
    with pytest.raises(ValueError, match="ordinary posts"):
        DomainCheck.fit("suicide_risk", HIGH, [])


def _benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "domain_check.py"
    spec = importlib.util.spec_from_file_location("domain_check_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_counts_warned_alarms_and_what_a_gate_would_silence(checked):
    measure = _benchmark().measure
    analyzer = Analyzer(["suicide_risk"], "labels", models=checked)
    ordinary_high = "周末去超市买了水果，药已经攒够了"  # ordinary words around a plan: a gate's danger
    row = measure(analyzer, [HIGH[0], LOW[0], ordinary_high, "主队赢了球赛"],
                  [("high",), ("low",), ("high",), ("low",)])
    result = [analyzer.analyze(t) for t in (HIGH[0], LOW[0], ordinary_high, "主队赢了球赛")]
    high = [r.high_risk for r in result]
    outside = [r.tasks["suicide_risk"].outside_training_domain for r in result]
    assert row["posts"] == 4 and row["high_risk"] == sum(high) / 4 and row["outside"] == sum(outside) / 4
    assert row["high_if_gated"] == sum(h and not o for h, o in zip(high, outside, strict=True)) / 4
    assert row["f1_positive_if_gated"] <= row["f1_positive"]  # gating only removes high decisions
    with pytest.raises(SystemExit, match="no domain check"):
        measure(Analyzer(["suicide_risk"], "labels", models=tiny_models()), [HIGH[0]])
