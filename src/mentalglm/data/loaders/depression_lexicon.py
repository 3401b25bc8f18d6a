"""Chinese depression-domain lexicon built from Weibo (Li et al. 2020): 2,321 words marked depressive or not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mentalglm.data.loaders.base import LexiconLoader, Source
from mentalglm.data.readers import Row, check_label
from mentalglm.data.registry import register_dataset

HEADER = ["抑郁词", "抑郁倾向（0非抑郁；1抑郁）"]
CODES = {"1": "depressive", "0": "non_depressive"}


@register_dataset
class DepressionLexicon(LexiconLoader):
    name = "depression_lexicon"

    def rows(self, source: Source) -> Iterator[Row]:
        return source.tsv("Depression_Domain_Lexicon_202003.csv", fieldnames=HEADER, delimiter=",")

    def entry(self, row: Row) -> tuple[str, str]:
        return row.fields[HEADER[0]], CODES[check_label(row.fields[HEADER[1]], CODES)]


def load_lexicon(data_dir: Path | str | None = None, *, verify: bool = True) -> dict[str, str]:
    """word -> "depressive" | "non_depressive"."""
    return DepressionLexicon().lexicon(data_dir, verify=verify)
