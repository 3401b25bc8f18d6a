"""SOS-HL-1K: high / low suicide risk of Weibo "Zoufan tree hole" comments (999 train, 250 val)."""

from __future__ import annotations

from mentalglm.data.loaders.base import ManifestLoader, Source
from mentalglm.data.readers import Row, check_label
from mentalglm.data.records import Post
from mentalglm.data.registry import register_dataset
from mentalglm.data.splits import carve, normalise_text

# TSV despite the .csv suffix; label 1 = 高自杀风险.
FILES = {"train": "data/suicide/suicide_train_LLM.csv", "val": "data/suicide/suicide_val_LLM.csv"}
LABELS = {"0": "low", "1": "high"}
VALIDATION_SIZE = 100


@register_dataset
class SOSHL1K(ManifestLoader):
    """The 250-post ``val`` file is the paper's test split; ``validation`` is carved out of train."""

    name = "sos_hl_1k"
    task = "suicide_risk"
    part_names = ("train", "validation", "val", "full_train")

    def _file(self, source: Source, key: str) -> list[Post]:
        def make(row: Row) -> Post:
            label = LABELS[check_label(row.fields["label"], LABELS)]
            return source.post(f"{key}:{row.fields['id'].strip()}", row.fields["comment"], (label,))

        return source.convert(source.tsv(FILES[key], fieldnames=["id", "label", "comment"]), make)

    def read(self, source: Source, part: str) -> list[Post]:
        if part in ("val", "full_train"):
            return self._file(source, part.removeprefix("full_"))
        test_keys = {normalise_text(p.text) for p in self._file(source, "val")}
        rest, validation = carve(self._file(source, "train"), VALIDATION_SIZE, exclude=test_keys)
        return validation if part == "validation" else rest
