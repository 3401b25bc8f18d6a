"""The backbone tier's training (schedule, resume, run identity) and its saved files, on a tiny random Qwen."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mentalglm.backends.tiny import build_tiny_chat_model
from mentalglm.data.records import Post
from mentalglm.errors import ConfigError
from mentalglm.tasks import get_task
from mentalglm.train.backbone import (
    BEST_DIR,
    CHECKPOINT_FILE,
    DONE_FILE,
    BackboneSettings,
    TaskData,
    pass_batches,
    schedule,
    train_backbone,
)
from mentalglm.train.backbone_model import (
    HEADS_FILE,
    META_FILE,
    BackboneFileError,
    BackboneHead,
    SharedReader,
    TorchReader,
    load_backbone,
    load_heads,
)
from mentalglm.train.classical import Classifier

TASKS = ("emotion", "cognitive_distortion", "suicide_risk")


def _posts(task_id: str, n: int, seed: int) -> list[Post]:
    task, rng = get_task(task_id), random.Random(seed)
    labels = task.classifier_labels
    out = []
    for i in range(n):
        chosen = tuple(sorted(rng.sample(labels, 2))) if task.is_multi_label else (rng.choice(labels),)
        out.append(Post(f"{task_id}-{seed}-{i}", f"帖子{chosen[0]}" + "很" * rng.randint(0, 12) + str(i), chosen, "t"))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def data() -> list[TaskData]:
    return [TaskData(get_task(t), _posts(t, 24, 1), _posts(t, 8, 2)) for t in TASKS]


def _settings(tiny: Path, **changes) -> BackboneSettings:
    base = dict(base=str(tiny), steps=12, batch_size=4, eval_every=6, checkpoint_every=3, warmup_steps=2, layers=None)
    return BackboneSettings(**{**base, **changes})


def test_a_resumed_schedule_is_the_unbroken_one_and_a_pass_reads_each_post_once() -> None:
    settings = BackboneSettings(steps=200, batch_size=4)
    lengths = [[i % 37 for i in range(50)], [i % 11 for i in range(30)], [5, 6, 7]]
    unbroken = list(schedule(settings, lengths))
    assert list(schedule(settings, lengths, start=77)) == unbroken[77:]
    assert {task for _, task, _ in unbroken} == {0, 1, 2}
    one_pass = [i for batch in pass_batches(settings, 0, lengths[0], 3) for i in batch]
    assert len(one_pass) == len(set(one_pass)) == 48  # 50 posts: 12 full batches of 4
    spreads = [np.ptp([lengths[0][i] for i in batch]) for batch in pass_batches(settings, 0, lengths[0], 0)]
    assert np.mean(spreads) < 6  # length-grouped: random batches of these lengths spread ~25


def test_an_interrupted_run_resumes_to_the_same_model_as_an_unbroken_one(tiny: Path, data: list[TaskData],
                                                                         tmp_path: Path) -> None:
    torch.set_num_threads(1)
    settings = _settings(tiny)
    unbroken = train_backbone(data, settings, tmp_path / "a")
    train_backbone(data, settings, tmp_path / "b", stop_after=4)
    assert (tmp_path / "b" / CHECKPOINT_FILE).exists() and not (tmp_path / "b" / DONE_FILE).exists()
    train_backbone(data, settings, tmp_path / "b", stop_after=5)  # a second interruption, off the checkpoint grid
    resumed = train_backbone(data, settings, tmp_path / "b")
    assert not (tmp_path / "b" / CHECKPOINT_FILE).exists() and (tmp_path / "b" / DONE_FILE).exists()
    a, b = load_heads(unbroken), load_heads(resumed)
    for task in TASKS:
        assert torch.allclose(a.heads[task].weight, b.heads[task].weight, atol=1e-6)
    model_a, _, meta_a = load_backbone(unbroken)
    model_b, _, meta_b = load_backbone(resumed)
    lora_a = {k: v for k, v in model_a.state_dict().items() if "lora_" in k}
    lora_b = {k: v for k, v in model_b.state_dict().items() if "lora_" in k}
    assert lora_a and all(torch.allclose(lora_a[k], lora_b[k], atol=1e-6) for k in lora_a)
    assert meta_a["validation"] == meta_b["validation"] and meta_a["best_step"] in (6, 12)
    assert train_backbone(data, settings, tmp_path / "b") == resumed  # finished: found, not retrained


def test_another_run_in_the_same_directory_is_refused_by_name(tiny: Path, data: list[TaskData],
                                                              tmp_path: Path) -> None:
    train_backbone(data, _settings(tiny), tmp_path, stop_after=1)
    with pytest.raises(ConfigError, match="differs in: lr"):
        train_backbone(data, _settings(tiny, lr=1e-3), tmp_path)


def test_settings_that_cannot_train_are_refused() -> None:
    with pytest.raises(ConfigError, match="task_weights"):
        BackboneSettings(task_weights=(1.0,))
    with pytest.raises(ConfigError, match="steps"):
        BackboneSettings(steps=0)


def test_a_missing_or_corrupt_file_is_named_and_nothing_else_is_used(tiny: Path, data: list[TaskData],
                                                                    tmp_path: Path) -> None:
    train_backbone(data, _settings(tiny, steps=6), tmp_path)
    best = tmp_path / BEST_DIR
    (best / HEADS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(BackboneFileError, match=HEADS_FILE):
        load_heads(best)
    (best / META_FILE).unlink()
    with pytest.raises(BackboneFileError, match=f"{META_FILE}: missing"):
        load_backbone(best)


class _CountingReader:
    """A reader that counts its reads, with the heads of a trained backbone."""

    def __init__(self, directory: Path) -> None:
        self.heads, self.reads, self.meta = load_heads(directory), 0, {"hidden": 32}

    def pooled(self, texts):
        assert all(texts), "an empty text reached the reader"
        self.reads += 1
        return np.ones((len(texts), 32), dtype=np.float32) * np.arange(len(texts))[:, None] / 10


def test_every_head_is_a_classifier_and_one_read_serves_all_tasks(tiny: Path, data: list[TaskData],
                                                                 tmp_path: Path) -> None:
    final = train_backbone(data, _settings(tiny, steps=6, eval_every=3), tmp_path)
    shared = SharedReader(_CountingReader(final))  # type: ignore[arg-type]
    texts = ["今天很开心", "我不想活了", "他们都看不起我"]
    for task in TASKS:
        head: Classifier = BackboneHead(shared, task)
        proba = head.predict_proba(texts)
        assert proba.shape == (3, len(get_task(task).classifier_labels))
        labels = head.predict(texts)
        assert all(set(row) <= set(head.classes) and row for row in labels)
        if not head.multi_label:
            assert np.allclose(proba.sum(axis=1), 1.0)
    assert shared.reader.reads == 1


def test_an_empty_text_reads_as_the_zero_vector_alone_or_among_others(tiny: Path, data: list[TaskData],
                                                                    tmp_path: Path) -> None:
    """Occlusion removes a one-clause post's only clause: the reader must not fail on the empty rest (no token to
    pool), and an empty text reads the same whether it comes alone or padded among others."""
    final = train_backbone(data, _settings(tiny, steps=3), tmp_path)
    shared = SharedReader(TorchReader(final))
    alone = shared.pooled([""])
    assert alone.shape[0] == 1 and not alone.any()
    mixed = shared.pooled(["今天很开心", "", "我不想活了"])
    assert not mixed[1].any() and mixed[0].any()
    assert np.allclose(mixed[[0, 2]], SharedReader(TorchReader(final)).pooled(["今天很开心", "我不想活了"]), atol=1e-5)
    assert BackboneHead(shared, "emotion").predict([""])  # the heads decide something for it, without failing


def test_a_resumed_run_logs_each_step_once(tiny: Path, data: list[TaskData], tmp_path: Path) -> None:
    from mentalglm.train.backbone import EVAL_FILE, LOG_FILE

    settings = _settings(tiny)
    train_backbone(data, settings, tmp_path, stop_after=5)  # checkpoint at 3, then 4 and 5 (and the stop's own)
    with (tmp_path / LOG_FILE).open("a", encoding="utf-8") as handle:
        handle.write("6,emotion,0.1,0.0002,1.0\n")  # a step logged after the last checkpoint, then killed
    train_backbone(data, settings, tmp_path)
    steps = [line.split(",")[0] for line in (tmp_path / LOG_FILE).read_text(encoding="utf-8").splitlines()[1:]]
    assert steps == [str(s) for s in range(1, 13)]
    evaluated = [json.loads(line)["step"] for line in (tmp_path / EVAL_FILE).read_text(encoding="utf-8").splitlines()]
    assert evaluated == [6, 12]


def test_a_run_trained_on_from_a_saved_backbone_starts_from_its_weights_and_is_tied_to_them(
        tiny: Path, data: list[TaskData], tmp_path: Path) -> None:
    from mentalglm.train.backbone import EVAL_FILE, RUN_FILE

    first = train_backbone(data, _settings(tiny, steps=6), tmp_path / "first")
    source = tmp_path / "first" / BEST_DIR
    settings = _settings(tiny, steps=6, seed=14)
    train_backbone(data, settings, tmp_path / "on", init_from=source, stop_after=2)
    start = json.loads((tmp_path / "on" / EVAL_FILE).read_text(encoding="utf-8").splitlines()[0])
    source_scores = json.loads((source / META_FILE).read_text(encoding="utf-8"))["validation"]
    assert start["step"] == 0 and all(start[task] == source_scores[task] for task in TASKS)  # values, thresholds
    final = train_backbone(data, settings, tmp_path / "on", init_from=source)  # resumed, not warm-started again
    steps = [json.loads(line)["step"] for line in (tmp_path / "on" / EVAL_FILE).read_text(encoding="utf-8").splitlines()]
    assert steps == [0, 6]
    digests = json.loads((tmp_path / "on" / RUN_FILE).read_text(encoding="utf-8"))["init_from"]
    assert json.loads((final / META_FILE).read_text(encoding="utf-8"))["init_from"] == digests
    with pytest.raises(ConfigError, match="rerun with the same --init-from"):  # resumed without it
        train_backbone(data, settings, tmp_path / "on")
    (tmp_path / "again").mkdir()  # killed during the start's validation: its row logged, no checkpoint yet
    (tmp_path / "again" / EVAL_FILE).write_text(json.dumps(start) + "\n", encoding="utf-8")
    train_backbone(data, settings, tmp_path / "again", init_from=source, stop_after=1)
    assert [json.loads(line)["step"] for line in (tmp_path / "again" / EVAL_FILE).read_text().splitlines()] == [0]
    # the start is a candidate for best/: where six more steps did not beat it on validation, it is kept
    best_step = json.loads((final / META_FILE).read_text(encoding="utf-8"))["best_step"]
    same = torch.allclose(load_heads(first).heads["emotion"].weight, load_heads(final).heads["emotion"].weight)
    assert same == (best_step == 0)
    with pytest.raises(ConfigError, match="all layers"):
        train_backbone(data, _settings(tiny, steps=2, layers=1), tmp_path / "cut", init_from=source)
    with pytest.raises(ConfigError, match="r, alpha, modules"):
        train_backbone(data, _settings(tiny, steps=2, lora_alpha=8), tmp_path / "alpha", init_from=source)
    (source / HEADS_FILE).unlink()
    with pytest.raises(BackboneFileError, match=HEADS_FILE):
        train_backbone(data, settings, tmp_path / "gone", init_from=source)


def test_a_shallower_backbone_trains_saves_and_merges_with_its_layer_count(tiny: Path, data: list[TaskData],
                                                                           tmp_path: Path) -> None:
    from mentalglm.train.backbone_model import ADAPTER_DIR
    from mentalglm.train.export import merge_adapter

    final = train_backbone(data, _settings(tiny, steps=3, eval_every=3, layers=1), tmp_path / "run")
    model, _heads, meta = load_backbone(final, merge=True)
    assert meta["layers"] == 1
    assert model.config.num_hidden_layers == 1 and len(model.get_decoder().layers) == 1
    merged = merge_adapter(final / ADAPTER_DIR, tmp_path / "merged")  # what `backbone export` converts to GGUF
    assert json.loads((merged / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"] == 1
    with pytest.raises(ConfigError, match="num_layers 5 is outside 1..2"):
        train_backbone(data, _settings(tiny, steps=3, layers=5), tmp_path / "too-deep")


def test_the_merged_copy_reads_as_the_adapter_does_and_int8_is_chosen_only_once_checked(
        tiny: Path, data: list[TaskData], tmp_path: Path) -> None:
    from mentalglm.train.backbone_model import (
        ADAPTER_DIR,
        ADAPTER_WEIGHTS,
        MERGED_DIR,
        TorchReader,
        check_engines,
        choose_engine,
        merge_for_reading,
    )

    final = train_backbone(data, _settings(tiny, steps=3, eval_every=3), tmp_path / "run")
    texts = {"emotion": ["今天很开心", "我不想活了，真的很累"], "suicide_risk": ["他们都看不起我"]}
    slow = TorchReader(final).pooled(texts["emotion"])
    assert choose_engine(final) == ("torch", None)
    merge_for_reading(final)
    assert np.allclose(TorchReader(final).pooled(texts["emotion"]), slow, atol=1e-5)
    records = check_engines(final, None, texts)
    assert records["int8"]["posts"] == 3 and records["int8"]["cosine_min"] > 0.9
    assert choose_engine(final) == (("torch-int8", None) if records["int8"]["cosine_min"] >= 0.99 else ("torch", None))
    # a check recorded for other layers (an older int8) is stale: auto does not read with it
    meta = json.loads((final / "backbone.json").read_text())
    meta["int8"] = {**meta["int8"], "cosine_min": 1.0, "layers": ["q_proj"]}
    (final / "backbone.json").write_text(json.dumps(meta))
    assert choose_engine(final) == ("torch", None)
    assert choose_engine(final, "torch") == ("torch", None)
    adapter = final / ADAPTER_DIR / ADAPTER_WEIGHTS
    adapter.write_bytes(adapter.read_bytes() + b" ")  # another adapter in its place
    with pytest.raises(BackboneFileError, match=f"{MERGED_DIR}: merged from another adapter"):
        TorchReader(final)


def test_the_explainer_goes_beside_the_heads_only_when_trained_above_this_backbone(
        tiny: Path, data: list[TaskData], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`backbone explainer`: the SFT adapter must record this backbone's adapter as its base (its lower layers are
    the ones the heads read); the GGUF is recorded in backbone.json, and a recorded file gone or cut short is
    refused by name, never replaced by another LLM."""
    import shutil
    from dataclasses import asdict

    from peft import LoraConfig, get_peft_model

    from mentalglm.analyze.artifacts import own_explainer
    from mentalglm.train import export
    from mentalglm.train.backbone_model import ADAPTER_DIR, attach_explainer, explainer_gguf
    from mentalglm.train.config import ModelArguments
    from mentalglm.train.sft import BASE_FILE, base_adapter_digest, load_base_model

    monkeypatch.setattr(export, "find_converter", lambda fetch=False: tmp_path / "convert.py")
    monkeypatch.setattr(export, "convert_to_gguf", lambda merged, out, kind: out.write_bytes(b"GGUF" * 100) and out)
    final = train_backbone(data, _settings(tiny, steps=3), tmp_path / "run")
    own = final / ADAPTER_DIR

    def explainer_adapter(base_adapter: Path, name: str) -> Path:
        arguments = ModelArguments(name_or_path=str(tiny), base_adapter=str(base_adapter))
        model = get_peft_model(load_base_model(arguments), LoraConfig(r=2, target_modules=["q_proj"]))
        model.save_pretrained(tmp_path / name)
        recorded = {**asdict(arguments), "base_adapter_sha256": base_adapter_digest(base_adapter)}
        (tmp_path / name / BASE_FILE).write_text(json.dumps(recorded), encoding="utf-8")
        return tmp_path / name

    assert explainer_gguf(final) is None and own_explainer(tmp_path) is None
    path = attach_explainer(final, explainer_adapter(own, "explainer"))
    assert path == final / "explainer-q8_0.gguf" and explainer_gguf(final)[0] == path
    recorded = json.loads((final / META_FILE).read_text(encoding="utf-8"))["explainer"]
    assert recorded["file"] == path.name and recorded["bytes"] == 400 and len(recorded["trained_above"]) == 64
    assert not list(final.glob("backbone-merged-*"))  # the merged copy was scratch
    moved = tmp_path / "analyzer" / "backbone"  # an analyzer's copy, after the run directory is gone
    shutil.copytree(final, moved)
    shutil.rmtree(tmp_path / "run")
    assert attach_explainer(moved, tmp_path / "explainer") == moved / "explainer-q8_0.gguf"
    with pytest.raises(ConfigError, match="GGUF type"):
        attach_explainer(moved, tmp_path / "explainer", "q3")
    final, path = moved, moved / "explainer-q8_0.gguf"

    other = tmp_path / "other-backbone"
    get_peft_model(load_base_model(ModelArguments(name_or_path=str(tiny))),
                   LoraConfig(r=2, target_modules=["v_proj"], init_lora_weights=False)).save_pretrained(other)
    with pytest.raises(ConfigError, match="not trained above this backbone"):
        attach_explainer(final, explainer_adapter(other, "stranger"))

    path.write_bytes(b"GGUF")
    with pytest.raises(BackboneFileError, match="cut copy"):
        explainer_gguf(final)
    path.unlink()
    with pytest.raises(BackboneFileError, match="explainer-q8_0.gguf: missing"):
        explainer_gguf(final)
