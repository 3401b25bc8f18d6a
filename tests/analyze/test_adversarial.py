"""The adversarial set (benchmarks/adversarial/posts.jsonl) and what it requires of the analyzer (issue #7).

The format tests are fast. The data tests train the suicide-risk classifier the analyzer ships (C=1, ~20 s)
and run the labels engine on every injection pair: an instruction inside a post must not change the verdict.
"""

import importlib.util
import json
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from mentalglm.analyze.engine import Analyzer, check_text
from mentalglm.analyze.injection import strip_injection
from mentalglm.analyze.schema import PostResult
from mentalglm.tasks import get_task

ROOT = Path(__file__).resolve().parents[2]
POSTS = ROOT / "benchmarks" / "adversarial" / "posts.jsonl"
KINDS = {"injection", "obfuscated", "traditional", "pinyin", "mixed_en"}
# engine.py sets PostResult.injection_suspected once analyze.injection is on its input path.
INTEGRATED = "injection_suspected" in PostResult.model_fields
NOT_YET = pytest.mark.xfail(not INTEGRATED, strict=True,
                            reason="analyze.injection is not yet on the engine's input path (see docs/adversarial.md)")


def _rows() -> list[dict]:
    return [json.loads(line) for line in POSTS.read_text(encoding="utf-8").splitlines() if line.strip()]


def _twins() -> dict[str, dict[str, dict]]:
    twins: dict[str, dict[str, dict]] = {}
    for row in _rows():
        twins.setdefault(row["pair"], {})["clean" if row["kind"] == "clean" else "perturbed"] = row
    return twins


def _benchmark():
    spec = importlib.util.spec_from_file_location("adversarial_benchmark", ROOT / "benchmarks" / "adversarial.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the file -----------------------------------------------------------------------------------------


def test_ids_are_unique_and_name_pair_and_kind():
    rows = _rows()
    assert len(rows) >= 100
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert set(row) == {"id", "pair", "kind", "text", "expect"}, row["id"]
        assert row["id"] == f"{row['pair']}-{row['kind']}"
        assert row["kind"] in KINDS | {"clean"}


def test_every_pair_has_one_clean_twin_and_one_perturbed_twin_with_the_same_expectation():
    rows = _rows()
    per_pair = Counter(r["pair"] for r in rows)
    assert set(per_pair.values()) == {2}
    for pair, twins in _twins().items():
        assert set(twins) == {"clean", "perturbed"}, pair
        assert twins["clean"]["text"] != twins["perturbed"]["text"], pair
        assert twins["clean"]["expect"] == twins["perturbed"]["expect"], pair


def test_expectations_name_real_labels():
    for row in _rows():
        expect = row["expect"]
        assert set(expect) <= {"suicide_risk", "emotion", "cognitive_distortion"}, row["id"]
        assert expect.get("suicide_risk") in {"high", "low", None}, row["id"]
        if expect.get("emotion") is not None:
            assert expect["emotion"] in {label.id for label in get_task("emotion").labels}, row["id"]
        distortions = {label.id for label in get_task("cognitive_distortion").labels}
        assert set(expect.get("cognitive_distortion", [])) <= distortions, row["id"]


def test_each_kind_has_high_and_low_risk_posts_and_the_texts_are_valid_input():
    risk: dict[str, set] = {kind: set() for kind in KINDS}
    for twins in _twins().values():
        risk[twins["perturbed"]["kind"]].add(twins["clean"]["expect"].get("suicide_risk"))
        for row in twins.values():
            check_text(row["text"], 2000)
    assert all({"high", "low"} <= values for values in risk.values()), risk
    assert any(r["expect"].get("cognitive_distortion") for r in _rows())


def test_the_benchmark_refuses_a_pair_without_its_clean_twin():
    benchmark = _benchmark()
    row = {"id": "x-1-injection", "pair": "x-1", "kind": "injection", "text": "帖子", "expect": {}}
    with pytest.raises(ValueError, match="x-1"):
        benchmark.pairs([row])
    assert len(benchmark.pairs(_rows())) == len(_twins())


def test_the_detector_cuts_each_injection_back_to_its_clean_twin_and_flags_nothing_else():
    for pair, twins in _twins().items():
        clean, perturbed = twins["clean"], twins["perturbed"]
        assert strip_injection(clean["text"]) == (clean["text"], []), pair
        if perturbed["kind"] == "injection":
            assert strip_injection(perturbed["text"])[0] == clean["text"], pair
        else:
            assert strip_injection(perturbed["text"])[1] == [], pair


# --- the analyzer on the injection pairs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def suicide_model(data_dir):
    from mentalglm.analyze.recipe import train_task_model

    # the screen without its e5 half: the mechanism under test is the input path, and e5 would cost minutes here
    return train_task_model("suicide_risk", data_dir, c_grid=(1.0,), log=lambda _: None, screen_embedding=False)


def _flips(analyzer) -> tuple[list[str], list[str], list]:
    """(high -> low pairs, low -> high pairs, perturbed results) on the injection pairs."""
    twins = [t for t in _twins().values() if t["perturbed"]["kind"] == "injection"]
    texts = [t[slot]["text"] for t in twins for slot in ("clean", "perturbed")]
    results = list(analyzer.analyze_many(texts))
    down, up = [], []
    for i, t in enumerate(twins):
        clean, perturbed = (results[2 * i + j].tasks["suicide_risk"].labels[0].id for j in (0, 1))
        if clean != perturbed:
            (down if clean == "high" else up).append(t["clean"]["pair"])
    return down, up, results[1::2]


@pytest.mark.data
def test_injection_never_turns_high_risk_into_low_risk(suicide_model):
    analyzer = Analyzer(tasks=["suicide_risk"], engine="labels", models={"suicide_risk": suicide_model})
    down, _, _ = _flips(analyzer)
    assert down == [], f"an instruction in the post hid a high-risk verdict: {down}"


@pytest.mark.data
@NOT_YET
def test_injection_does_not_flip_the_suicide_risk_verdict_and_is_flagged(suicide_model):
    analyzer = Analyzer(tasks=["suicide_risk"], engine="labels", models={"suicide_risk": suicide_model})
    down, up, perturbed = _flips(analyzer)
    assert (down, up) == ([], []), f"high->low {down}, low->high {up}"
    assert all(result.injection_suspected for result in perturbed)


@pytest.mark.data
def test_the_proposed_input_path_keeps_every_verdict(suicide_model):
    """The benchmark's wrapper is the integration engine.py is to get: until then it is what keeps verdicts."""
    benchmark = _benchmark()
    analyzer = benchmark.DefendedAnalyzer(["suicide_risk"], "labels", models={"suicide_risk": suicide_model},
                                          classifier_input=benchmark.model_input("strip"), llm_strip=True)
    assert _flips(analyzer)[:2] == ([], [])


@pytest.mark.data
def test_no_post_of_the_set_is_copied_from_the_data(data_dir):
    from mentalglm.data.splits import canonical_splits

    def key(text: str) -> str:
        return re.sub(r"\W", "", unicodedata.normalize("NFKC", text).lower())

    ours = {key(r["text"]) for r in _rows()}
    for task in ("suicide_risk", "cognitive_distortion", "emotion"):
        splits, _ = canonical_splits(task, data_dir, include_extra=False)
        copied = ours & {key(p.text) for split in splits.values() for p in split}
        assert not copied, f"{task}: {sorted(copied)[:3]}"
