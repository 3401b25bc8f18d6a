"""The Chinese suicide lexicon released with SOS-4K (RSLF): 1,981 words in 7 categories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mentalglm.data.loaders.base import LexiconLoader, Source
from mentalglm.data.readers import Row, check_label
from mentalglm.data.registry import register_dataset

HEADER = ["词汇", "类别"]
CATEGORIES = ("生存痛苦", "风险因素", "自杀意图", "自杀方式", "负面情绪", "现在", "未来")


@register_dataset
class SuicideLexicon(LexiconLoader):
    name = "suicide_lexicon"

    def rows(self, source: Source) -> Iterator[Row]:
        return source.tsv("data_final/dict_final/Chinese suicide lexicontFinal.csv", fieldnames=HEADER, delimiter=",")

    def entry(self, row: Row) -> tuple[str, str]:
        return row.fields[HEADER[0]], check_label(row.fields[HEADER[1]], CATEGORIES, "category")


def load_lexicon(data_dir: Path | str | None = None, *, verify: bool = True) -> dict[str, str]:
    """word -> category (生存痛苦, 风险因素, 自杀意图, 自杀方式, 负面情绪, 现在, 未来)."""
    return SuicideLexicon().lexicon(data_dir, verify=verify)
