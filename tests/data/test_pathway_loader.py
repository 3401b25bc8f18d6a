"""The cognitive pathway loader on the invented fixture and on broken copies of it: every error names file:line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mentalglm.data.loaders.cognitive_pathway import (
    MAX_SENTENCE_CHARS,
    CognitivePathwayFiles,
    pathway_directory,
    read_label_file,
)
from mentalglm.data.registry import get_loader
from mentalglm.errors import BadRowError, MissingDataError
from mentalglm.tasks.pathway import PathwayFileError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pathway"


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "pathway"
    shutil.copytree(FIXTURE, target)
    return target


def _append(path: Path, text: str) -> int:
    """Append one line; returns its line number."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
    return len(path.read_text(encoding="utf-8").splitlines())


def test_reads_the_fixture_parts_with_labels_as_written() -> None:
    loader = CognitivePathwayFiles(FIXTURE)
    sizes = {part: len(loader.load(None, part)[0]) for part in loader.parts()}
    assert sizes == {"train": 53, "dev": 17, "test": 16}
    train, report = loader.load(None, "train")
    assert train[0].id == "cognitive_pathway_files:train:1" and train[0].text == "昨天又和室友因为卫生问题吵了一架"
    assert train[5].labels == ("触发性事件", "触发性事件##人际冲突")  # full-width comma between the labels
    assert train[15].labels == ("认知歪曲", "认知歪曲##以偏概全")  # a repeated label is kept once
    assert train[17].labels == ("认知歪曲##以偏概全",)  # a child alone: its parent is implied when scored
    assert report.skipped_bad_rows == 0 and report.files[-1].endswith("train.txt")
    assert "触发性事件##学业/工作压力" in loader.labels() and len(loader.labels()) == 12
    assert set(loader.files_sha256()) == {"train.txt", "dev.txt", "test.txt", "label.txt"}


def test_registered_for_the_task_split_and_found_under_the_data_dir(tmp_path: Path, copy: Path) -> None:
    loader = get_loader("cognitive_pathway_files")
    assert loader.task == "cognitive_pathway" and loader.parts() == ("train", "dev", "test")
    shutil.move(copy, tmp_path / "cognitive_pathway")
    posts, _ = loader.load(tmp_path, "test")
    assert len(posts) == 16
    assert pathway_directory(None, tmp_path) == tmp_path / "cognitive_pathway"


def test_missing_directory_and_files_say_what_to_pass(tmp_path: Path, copy: Path) -> None:
    with pytest.raises(MissingDataError, match="cognitive pathway directory.*pass --pathway-dir"):
        CognitivePathwayFiles(tmp_path / "nowhere").load(None, "test")
    (copy / "dev.txt").unlink()
    with pytest.raises(MissingDataError, match="'dev.txt'.*--pathway-dir DIR.*not redistributable"):
        CognitivePathwayFiles(copy).load(None, "dev")
    (copy / "label.txt").unlink()
    with pytest.raises(MissingDataError, match="'label.txt'"):
        CognitivePathwayFiles(copy).load(None, "test")


@pytest.mark.parametrize(
    "line, message",
    [
        ("没有制表符的一行\n", "no TAB between the sentence"),
        ("\n", "empty line; delete it"),
        ("一句话\t\n", "no labels after the TAB"),
        ("\t认知歪曲\n", "empty sentence"),
        ("一句话\t认知歪曲##读心\n", "label '认知歪曲##读心' is not in .*label.txt; did you mean '认知歪曲##读心术'"),
        ("一句话\t以偏概全\n", "label '以偏概全' has no parent; .*'认知歪曲##以偏概全'"),
        ("一句话\t认知歪曲##自责\n", "label .认知歪曲##自责. is not in [^;]*label.txt; add it there"),
        ("长" * (MAX_SENTENCE_CHARS + 1) + "\t驳斥\n", f"sentence has {MAX_SENTENCE_CHARS + 1} characters, more than the limit"),
    ],
)
def test_bad_data_lines_name_file_and_line(copy: Path, line: str, message: str) -> None:
    number = _append(copy / "test.txt", line)
    with pytest.raises(BadRowError, match=rf"test.txt:{number}: {message}"):
        CognitivePathwayFiles(copy).load(None, "test")
    posts, report = CognitivePathwayFiles(copy).load(None, "test", skip_bad_rows=True)
    assert len(posts) == 16 and report.skipped_bad_rows == 1 and f"test.txt:{number}" in report.skipped_reasons[0]


def test_wrong_encoding_names_the_line(copy: Path) -> None:
    with (copy / "dev.txt").open("ab") as handle:
        handle.write("一句GBK编码的话\t驳斥\n".encode("gbk"))
    with pytest.raises(BadRowError, match=r"dev.txt:18: not valid UTF-8.*convert the file to UTF-8"):
        CognitivePathwayFiles(copy).load(None, "dev")
    (copy / "label.txt").write_bytes("触发性事件\n认知歪曲\n情绪反应\n驳斥\n".encode("utf-16"))
    with pytest.raises(PathwayFileError, match=r"label.txt:1: not valid UTF-8"):
        read_label_file(copy / "label.txt")


@pytest.mark.parametrize(
    "content, message",
    [
        ("触发性事件\n认知歪曲\n\n情绪反应\n驳斥\n", r"label.txt:3: empty line"),
        ("触发性事件\n认知歪曲\n情绪反应\n驳斥\n以偏概全\n", r"label.txt:5: label '以偏概全' is neither a parent nor"),
        ("触发性事件\n自动思维##灾难化\n", r"label.txt:2: label '自动思维##灾难化' is neither"),
        ("触发性事件\n认知歪曲##\n", r"label.txt:2: label '认知歪曲##' is neither"),
        ("触发性事件\n认知歪曲\n认知歪曲\n", r"label.txt:3: label '认知歪曲' is listed twice"),
        ("触发性事件\n认知歪曲\n认知歪曲##读心术\n情绪反应\n", r"label.txt:1: .*does not list the parent\(s\) 驳斥"),
        ("", r"label.txt:1: the label file lists no labels"),
    ],
)
def test_a_label_file_that_does_not_match_stops_with_its_line(copy: Path, content: str, message: str) -> None:
    (copy / "label.txt").write_text(content, encoding="utf-8")
    with pytest.raises(PathwayFileError, match=message):
        CognitivePathwayFiles(copy).load(None, "test", skip_bad_rows=True)  # never skipped: it judges every line


def test_a_label_the_files_use_but_label_txt_lacks_is_refused(copy: Path) -> None:
    labels = (copy / "label.txt").read_text(encoding="utf-8").replace("情绪反应##行为反应\n", "")
    (copy / "label.txt").write_text(labels, encoding="utf-8")
    with pytest.raises(BadRowError, match=r"train.txt:37: label '情绪反应##行为反应' is not in"):
        CognitivePathwayFiles(copy).load(None, "train")
