"""SocialCD-3K: 12 Burns cognitive distortions, multi-label, on Weibo "Zoufan tree hole" comments."""

from __future__ import annotations

from mentalglm.data.loaders.base import ManifestLoader, Source
from mentalglm.data.readers import Row, RowProblem
from mentalglm.data.records import Post
from mentalglm.data.registry import register_dataset
from mentalglm.data.splits import carve, normalise_text
from mentalglm.tasks import get_task

FILES = {"train": "data/SocialCD-3k/train_data_with_header.tsv", "test": "data/SocialCD-3k/test_data_with_header.tsv"}
TEXT_COLUMN = "内容"
VALIDATION_SIZE = 300


@register_dataset
class SocialCD3K(ManifestLoader):
    name = "socialcd3k"
    task = "cognitive_distortion"
    part_names = ("train", "validation", "test", "full_train")

    def _file(self, source: Source, key: str) -> list[Post]:
        task = get_task(self.task)
        # The header holds the labels' Chinese names, in the task's order; a different header is another file.
        columns = {label.zh: label.id for label in task.labels}

        def make(row: Row) -> Post:
            flags = {name: row.fields[name].strip() for name in columns}
            odd = {name: value for name, value in flags.items() if value not in ("0", "1")}
            if odd:
                raise RowProblem(f"label columns must be 0 or 1, got {odd}")
            labels = tuple(columns[name] for name, value in flags.items() if value == "1")
            if not labels:
                raise RowProblem("no distortion marked; every SocialCD-3K post has at least one")
            return source.post(f"{key}:{row.index}", row.fields[TEXT_COLUMN], labels)

        return source.convert(source.tsv(FILES[key], fieldnames=[*columns, TEXT_COLUMN]), make)

    def read(self, source: Source, part: str) -> list[Post]:
        if part in ("test", "full_train"):
            return self._file(source, part.removeprefix("full_"))
        test_keys = {normalise_text(p.text) for p in self._file(source, "test")}
        rest, validation = carve(self._file(source, "train"), VALIDATION_SIZE, exclude=test_keys)
        return validation if part == "validation" else rest
