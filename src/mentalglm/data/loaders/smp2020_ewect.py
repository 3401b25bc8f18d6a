"""SMP2020-EWECT Weibo emotion (6 classes): the "usual" and COVID-19 "virus" domains."""

from __future__ import annotations

from mentalglm.data.loaders.base import ManifestLoader, Source
from mentalglm.data.readers import Row, check_label
from mentalglm.data.records import Post
from mentalglm.data.registry import register_dataset
from mentalglm.tasks import get_task

# usual_train is the authors' .xls converted to JSON lines; the others are the original JSON arrays.
FILES = {
    "usual_train": "usual_train_from_xls.jsonl",
    "usual_eval": "usual_eval_labeled.txt",
    "usual_test": "usual_test_labeled.txt",
    "virus_train": "virus_train.txt",
    "virus_eval": "virus_eval_labeled.txt",
    "virus_test": "virus_test_labeled.txt",
}


@register_dataset
class SMP2020EWECT(ManifestLoader):
    name = "smp2020_ewect"
    task = "emotion"
    part_names = tuple(FILES)

    def read(self, source: Source, part: str) -> list[Post]:
        labels = get_task(self.task).label_ids
        relative = FILES[part]
        rows = source.jsonl(relative) if relative.endswith(".jsonl") else source.json_array(relative)

        def make(row: Row) -> Post:
            # Source ids are unique within each file, so they make stable post ids.
            key = f"{part}:{row.fields.get('id', row.index)}"
            return source.post(key, row.fields.get("content"), (check_label(str(row.fields.get("label")), labels),))

        return source.convert(rows, make)
