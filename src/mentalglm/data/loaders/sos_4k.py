"""SOS-4K (RSLF): 11-level suicide risk with an LLM-written Chinese explanation per post."""

from __future__ import annotations

from mentalglm.data.loaders.base import ManifestLoader, Source
from mentalglm.data.readers import Row, check_label
from mentalglm.data.records import Post
from mentalglm.data.registry import register_dataset

LEVELS = tuple(str(level) for level in range(11))
FILE = "data_final/data/{part}_data_withExplainFewShot.tsv"


@register_dataset
class SOS4K(ManifestLoader):
    """``meta["explanation"]`` is a reference rationale, useful to score generated explanations against."""

    name = "sos_4k"
    task = "suicide_level"
    part_names = ("train", "val", "test")

    def read(self, source: Source, part: str) -> list[Post]:
        def make(row: Row) -> Post:
            level = check_label(row.fields["myLabel"], LEVELS, "myLabel")
            return source.post(f"{part}:{row.index}", row.fields["comment"], (level,),
                               explanation=row.fields["explain"].strip())

        rows = source.tsv(FILE.format(part=part), fieldnames=["comment", "myLabel", "explain"])
        return source.convert(rows, make)
