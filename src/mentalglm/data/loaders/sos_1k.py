"""SOS-1K: 11-level (0..10) suicide risk with a binary high/low label per post, plus LLM-generated augmentation."""

from __future__ import annotations

from mentalglm.data.loaders.base import ManifestLoader, Source
from mentalglm.data.readers import BadRows, Row, RowProblem, check_label
from mentalglm.data.records import Post
from mentalglm.data.registry import register_dataset

LEVELS = tuple(str(level) for level in range(11))
BINARY = {"0": "low", "1": "high"}
ROOT = "suicideDataProcessing/data"
# fold k of the 5-fold CV; train_dataK / val_dataK in the source are these folds recombined.
GROUPS = {**{f"fold{k}": (f"fine-grained/fold{k}.tsv", f"binary/fold{k}_twoClass.tsv") for k in range(1, 6)},
          "test": ("fine-grained/test_data.tsv", "binary/testdata_twoClass.tsv")}
PARTS = {"train": ("fold1", "fold2", "fold3", "fold4"), "validation": ("fold5",), "test": ("test",),
         **{f"fold{k}": (f"fold{k}",) for k in range(1, 6)}, "binary_all": tuple(GROUPS)}
SYNTHETIC = "suicideDataProcessing/data augmentation/LLMs/New GenerateData/round{round}-train/" \
            "LLMsData-round{round}-myLabel{level}-new.tsv"


@register_dataset
class SOS1K(ManifestLoader):
    """Level parts carry ``meta["binary"]``; ``binary_all`` is labelled low/high with ``meta["level"]``.

    The binary label was annotated on its own (it is not a threshold on the level), so both are kept.
    """

    name = "sos_1k"
    task = "suicide_level"
    part_names = (*PARTS, "synthetic")

    def _group(self, source: Source, group: str, binary_labels: bool) -> list[Post]:
        level_file, binary_file = GROUPS[group]
        binary = {row.index: row for row in source.tsv(f"{ROOT}/{binary_file}", fieldnames=["comment", "twoClass"])}

        def make(row: Row) -> Post:
            level = check_label(row.fields["myLabel"], LEVELS, "myLabel")
            twin = binary.get(row.index)
            if twin is None or twin.fields["comment"] != row.fields["comment"]:
                raise RowProblem(f"row {row.index} differs from row {row.index} of {binary_file}")
            risk = BINARY[check_label(twin.fields["twoClass"], BINARY, "twoClass")]
            key, text = f"{group}:{row.index}", row.fields["comment"]
            if binary_labels:
                return source.post(key, text, (risk,), level=level)
            return source.post(key, text, (level,), binary=risk)

        return source.convert(source.tsv(f"{ROOT}/{level_file}", fieldnames=["comment", "myLabel"]), make)

    def _synthetic(self, source: Source) -> list[Post]:
        """Generated posts for training only. A few lines are known to be malformed upstream (a repeated,
        quoted header; a quote spanning the tab), so this part always skips and counts them."""
        lenient = Source(source.dataset, source.data_dir, source.report, BadRows(source.report, skip=True),
                         source.verify)
        posts: list[Post] = []
        for round_ in range(1, 6):
            for level in LEVELS:
                relative = SYNTHETIC.format(round=round_, level=level)

                def make(row: Row, level: str = level, round_: int = round_) -> Post:
                    if check_label(row.fields["myLabel"], LEVELS, "myLabel") != level:
                        raise RowProblem(f"myLabel {row.fields['myLabel']} in the file of level {level}")
                    return lenient.post(f"synthetic:r{round_}l{level}:{row.index}", row.fields["comment"],
                                        (level,), synthetic=True, round=round_)

                rows = lenient.tsv(relative, fieldnames=["comment", "myLabel"], header="optional")
                posts += lenient.convert(rows, make)
        return posts

    def read(self, source: Source, part: str) -> list[Post]:
        if part == "synthetic":
            return self._synthetic(source)
        return [post for group in PARTS[part] for post in self._group(source, group, part == "binary_all")]
