"""The IMHI loader: label parsing from answers, bad rows with file:line, missing files, and the real counts."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from mentalglm.data.loaders.imhi import MISSING_IN_SNAPSHOT, PART_FILES, parse_label
from mentalglm.data.manifest import manifest
from mentalglm.data.registry import get_loader
from mentalglm.errors import BadRowError, ChecksumMismatchError, ConfigError, MissingDataError
from mentalglm.tasks import all_tasks, get_task

LOADER = get_loader("imhi_mentalllama")

# Invented rows in the upstream layout; the second post spans two lines, the third answer names no label.
FIXTURE_ROWS = [
    ('Consider this post: "Went hiking with my sister today, the view was lovely." '
     "Question: Does the poster suffer from depression?",
     "No, the poster does not suffer from depression. Reasoning: The post describes a pleasant day out."),
    ('Consider this post: "Nothing feels worth doing anymore.\nI stay in bed all day." '
     "Question: Does the poster suffer from depression?",
     "Yes, the poster suffers from depression. Reasoning: Loss of interest and withdrawal."),
    ('Consider this post: "Is the bus running late again?" Question: Does the poster suffer from depression?',
     "It is hard to say. Reasoning: The post is a question about a bus."),
]


@pytest.fixture()
def fixture_dir(tmp_path: Path) -> Path:
    path = tmp_path / "IMHI_MentalLLaMA" / PART_FILES["DR/train"]
    path.parent.mkdir(parents=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query", "gpt-3.5-turbo"])
        writer.writerows(FIXTURE_ROWS)
    return tmp_path


def test_bad_row_names_file_and_line(fixture_dir: Path):
    with pytest.raises(BadRowError) as caught:
        LOADER.load(fixture_dir, "DR/train", verify=False)
    assert caught.value.line == 5  # header, row 1, row 2 (two lines), then the bad row
    assert caught.value.path.name == "train.csv"
    assert "It is hard to say." in str(caught.value)


def test_skip_bad_rows_counts_them(fixture_dir: Path):
    posts, report = LOADER.load(fixture_dir, "DR/train", verify=False, skip_bad_rows=True)
    assert [p.labels for p in posts] == [("no",), ("yes",)]
    assert report.skipped_bad_rows == 1 and ":5:" in report.skipped_reasons[0]
    first, second = posts
    assert first.text == "Went hiking with my sister today, the view was lovely."
    assert second.text == "Nothing feels worth doing anymore.\nI stay in bed all day."
    assert first.meta["question"] == "Does the poster suffer from depression?"
    assert first.meta["explanation"] == "The post describes a pleasant day out."
    assert first.meta["query"].startswith("Consider this post:") and first.meta["response"].startswith("No,")
    assert first.id != second.id and first.source == "imhi_mentalllama"


def test_checksum_is_verified(fixture_dir: Path):
    with pytest.raises(ChecksumMismatchError):
        LOADER.load(fixture_dir, "DR/train", skip_bad_rows=True)


def test_missing_snapshot_file_says_so(fixture_dir: Path):
    with pytest.raises(MissingDataError, match="absent from the stored snapshot"):
        LOADER.load(fixture_dir, "Irf/train")


def test_downloaded_missing_file_needs_no_verify(fixture_dir: Path):
    """A file absent from the snapshot has no recorded hash: reading it is an explicit --no-verify choice."""
    path = fixture_dir / "IMHI_MentalLLaMA" / PART_FILES["Irf/train"]
    path.parent.mkdir(parents=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([
            ["query", "gpt-3.5-turbo"],
            ['Consider this post: "Everyone would be fine without me around." '
             "Question: Does the post show risk of perceived burdensomeness?",
             "Yes, the post shows this risk. Reasoning: The poster sees themself as a burden."],
        ])
    with pytest.raises(ConfigError, match="no-verify"):
        LOADER.load(fixture_dir, "Irf/train")
    (post,), _ = LOADER.load(fixture_dir, "Irf/train", verify=False)
    assert post.labels == ("yes",) and post.meta["aspect"] == "perceived burdensomeness"


def test_unreleased_part_is_a_config_error(fixture_dir: Path):
    with pytest.raises(ConfigError, match="no training data for CAMS"):
        LOADER.load(fixture_dir, "CAMS/train")


@pytest.mark.parametrize(("task_id", "answer", "expected"), [
    ("imhi_dr", "No, the poster does not suffer from depression. Reasoning: ...", "no"),
    ("imhi_dr", "yes.. Reasoning: ...", "yes"),
    ("imhi_irf", "yes, the post does show a risk of thwarted belongingness. Reasoning: ...", "yes"),
    ("imhi_sad", "This post shows the stress cause related to emotion turmoil. Reasoning: ...", "emotional_turmoil"),
    ("imhi_sad", "other causes.", "other"),
    ("imhi_cams", "This post shows no causes of depression. Reasoning: ...", "none"),
    ("imhi_tsid", "This post shows PTSD. Reasoning: ...", "ptsd"),
    ("imhi_swmh", "This post shows mental disorder symptoms related to bipolar disorder.", "bipolar"),
    ("imhi_dr", "It is unclear. Reasoning: the post mentions depression.", None),  # label only after Reasoning
    ("imhi_tsid", "This post shows depression and PTSD.", None),  # two labels: ambiguous, not the first one
])
def test_parse_label(task_id: str, answer: str, expected: str | None):
    assert parse_label(get_task(task_id), answer) == expected


def test_every_imhi_split_is_a_loader_part():
    for task in all_tasks().values():
        for split in task.splits:
            if split.dataset == LOADER.name:
                assert split.part in LOADER.parts(), f"{task.id}: {split.part}"
    hashes = manifest()[LOADER.name].files
    assert {PART_FILES[part] for part in LOADER.parts() if part not in MISSING_IN_SNAPSHOT} == set(hashes)


# Rows per part from PROVENANCE.md; every answer in the snapshot parses (measured: 0 failures in 24 files).
REAL_COUNTS = {
    "DR/train": 1003, "DR/val": 430, "dreaddit/train": 2837, "dreaddit/val": 300, "SAD/train": 5547,
    "SAD/val": 616, "Irf/val": 985, "MultiWD/val": 1500, "CAMS/test": 625, "DR/test": 405, "Irf/test": 2113,
    "MultiWD/test": 2441, "SAD/test": 684, "dreaddit/test": 414, "loneliness/test": 528, "t-sid/test": 959,
}
MAX_PARSE_FAILURES = 0


@pytest.mark.data
@pytest.mark.parametrize(("part", "rows"), sorted(REAL_COUNTS.items()))
def test_real_counts(data_dir: Path, part: str, rows: int):
    posts, report = LOADER.load(data_dir, part, skip_bad_rows=True)
    assert report.skipped_bad_rows <= MAX_PARSE_FAILURES
    assert len(posts) + report.skipped_bad_rows == rows
    task = get_task(f"imhi_{part.split('/')[0].lower().replace('-', '')}")
    assert set(Counter(p.labels[0] for p in posts)) == set(task.label_ids)
    assert not any(p.text.startswith('Consider this post: "') for p in posts)


@pytest.mark.data
@pytest.mark.parametrize("set_name", ["DR", "SAD", "t-sid"])
def test_real_completion_layout_matches_instruction_layout(data_dir: Path, set_name: str):
    instruction, _ = LOADER.load(data_dir, f"{set_name}/test")
    completion, _ = LOADER.load(data_dir, f"{set_name}/test_complete")
    assert [p.labels for p in instruction] == [p.labels for p in completion]


@pytest.mark.data
@pytest.mark.parametrize("part", sorted(MISSING_IN_SNAPSHOT))
def test_real_missing_parts_raise(data_dir: Path, part: str):
    with pytest.raises(MissingDataError, match="absent from the stored snapshot"):
        LOADER.load(data_dir, part)


@pytest.mark.data
def test_real_aspects_are_recorded(data_dir: Path):
    posts, _ = LOADER.load(data_dir, "MultiWD/val")
    assert Counter(p.meta["aspect"] for p in posts) == {
        aspect: 250 for aspect in ("spiritual", "physical", "intellectual", "social", "vocational", "emotional")}
