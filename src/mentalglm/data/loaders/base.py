"""What every dataset module shares: provenance from the manifest, verified file access, post construction."""

from __future__ import annotations

import csv
import difflib
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mentalglm.data.datadir import resolve_data_dir
from mentalglm.data.manifest import data_file, dataset_entry
from mentalglm.data.readers import (
    BadRows,
    Row,
    RowProblem,
    check_label,
    clean_text,
    convert,
    read_delimited,
    read_json_array,
    read_jsonl,
    read_words,
)
from mentalglm.data.records import Post
from mentalglm.data.registry import DatasetLoader, LoadReport
from mentalglm.errors import ConfigError


@dataclass
class Source:
    """One load in progress: verified paths, the bad-row policy and the report travel together."""

    dataset: str
    data_dir: Path
    report: LoadReport
    bad: BadRows
    verify: bool = True

    def path(self, relative: str) -> Path:
        return data_file(self.data_dir, self.dataset, relative, self.report, verify=self.verify)

    def tsv(self, relative: str, **options: Any) -> Iterator[Row]:
        """Tab-separated, quoting disabled unless ``quoting`` says otherwise (DATA.md: quotes are literal)."""
        return read_delimited(self.path(relative), self.bad, **options)

    def csv(self, relative: str, **options: Any) -> Iterator[Row]:
        """Comma-separated with ordinary CSV quoting (the Weibo sentiment subsets quote texts with commas)."""
        return read_delimited(self.path(relative), self.bad, delimiter=",", quoting=csv.QUOTE_MINIMAL, **options)

    def jsonl(self, relative: str) -> Iterator[Row]:
        return read_jsonl(self.path(relative), self.bad)

    def json_array(self, relative: str) -> Iterator[Row]:
        return read_json_array(self.path(relative), self.bad)

    def words(self, relative: str) -> Iterator[Row]:
        return read_words(self.path(relative), self.bad)

    def convert(self, rows: Iterable[Row], make: Callable[[Row], Post]) -> list[Post]:
        return convert(rows, make, self.bad)

    def post(self, key: str, text: Any, labels: Iterable[str], **meta: Any) -> Post:
        """A Post with id ``<dataset>:<key>``; an empty text is a bad row, not a post."""
        if not isinstance(text, str):
            raise RowProblem(f"text is {type(text).__name__}, expected a string")
        text = clean_text(text)
        if not text:
            raise RowProblem("empty text")
        return Post(id=f"{self.dataset}:{key}", text=text, labels=tuple(labels), source=self.dataset, meta=meta)


class ManifestLoader(DatasetLoader):
    """A loader whose folder, source, commit and licence come from manifest.yaml, so they live in one place."""

    part_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        # Read at instantiation, not import, so one bad manifest entry cannot break every other loader.
        entry = dataset_entry(self.name)
        self.folder, self.source, self.commit, self.licence = entry.folder, entry.source, entry.commit, entry.licence

    def parts(self) -> tuple[str, ...]:
        return self.part_names

    def load(self, data_dir: Path, part: str, *, skip_bad_rows: bool = False,
             verify: bool = True) -> tuple[list[Post], LoadReport]:
        if part not in self.parts():
            close = difflib.get_close_matches(part, self.parts(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"dataset {self.name} has no part {part!r}.{hint} Parts: {', '.join(self.parts())}")
        report = LoadReport()
        source = Source(self.name, resolve_data_dir(data_dir), report, BadRows(report, skip_bad_rows), verify)
        posts = self.read(source, part)
        seen: set[str] = set()
        for post in posts:
            if post.id in seen:
                raise AssertionError(f"loader {self.name} emitted post id {post.id!r} twice in part {part}")
            seen.add(post.id)
        return posts, report

    @abstractmethod
    def read(self, source: Source, part: str) -> list[Post]:
        """The posts of one (already validated) part."""


def coded_label_posts(source: Source, relative: str, key: str, codes: dict[str, str],
                      text_column: str = "text") -> list[Post]:
    """Posts of a ``label,<text>`` CSV whose labels are numeric codes (the Weibo sentiment subsets)."""
    def make(row: Row) -> Post:
        code = check_label(row.fields["label"], codes)
        return source.post(f"{key}:{row.index}", row.fields[text_column], (codes[code],))

    return source.convert(source.csv(relative, fieldnames=["label", text_column]), make)


class LexiconLoader(ManifestLoader):
    """A word list exposed as posts (text = word, labels = its category) so that ``data stats`` can list it."""

    part_names = ("words",)

    @abstractmethod
    def rows(self, source: Source) -> Iterator[Row]:
        """The rows of the word list."""

    @abstractmethod
    def entry(self, row: Row) -> tuple[str, str]:
        """(word, category) of one row; RowProblem for an unknown category."""

    def read(self, source: Source, part: str) -> list[Post]:
        seen: set[str] = set()

        def make(row: Row) -> Post:
            word, category = self.entry(row)
            if clean_text(word) in seen:
                raise RowProblem(f"word {word!r} is listed twice")
            seen.add(clean_text(word))
            return source.post(str(row.index), word, (category,))

        return source.convert(self.rows(source), make)

    def lexicon(self, data_dir: Path | str | None = None, *, verify: bool = True) -> dict[str, Any]:
        """word -> category (a set of categories for lexicons where a word can have several)."""
        posts, _ = self.load(resolve_data_dir(data_dir), "words", verify=verify)
        return {post.text: self.entry_value(post) for post in posts}

    def entry_value(self, post: Post) -> Any:
        return post.labels[0]
