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
    save_task_model(replace(model, domain=None, card={"screen": model.card["screen"]}), tmp_path)  # no check
    assert load_task_model("suicide_risk", tmp_path).domain is None
    assert not domain_path(tmp_path, "suicide_risk").exists()


def test_a_card_without_the_screen_its_task_declares_is_refused_not_read_as_the_old_binary_model(checked, tmp_path):
    model = checked["suicide_risk"]
    save_task_model(replace(model, card={}), tmp_path)
    with pytest.raises(MissingDataError, match="written before task suicide_risk version 2"):
        load_task_model("suicide_risk", tmp_path)


def test_needs_both_kinds_of_posts():
    with pytest.raises(ValueError, match="ordinary posts"):
        DomainCheck.fit("suicide_risk", HIGH, [])

