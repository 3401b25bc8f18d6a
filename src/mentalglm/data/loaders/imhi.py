"""IMHI (MentalLLaMA): the English interpretable mental-health instructions, stage 1 of the two-stage recipe.

Each row is a query (``Consider this post: "<post>" Question: <question>``) and a gpt-3.5-turbo answer
(``<label sentence> Reasoning: <explanation>``). The gold label exists only inside that answer, so it is parsed
from the answer's first sentence against the labels declared in ``tasks/definitions/imhi_<set>.yaml``; an
answer that names no label, or more than one, is a bad row and never silently becomes a default class.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from mentalglm.data.loaders.base import ManifestLoader, Source
from mentalglm.data.manifest import dataset_entry
from mentalglm.data.records import Post
from mentalglm.data.registry import LoadReport, register_dataset
from mentalglm.errors import BadRowError, ConfigError, MissingDataError
from mentalglm.tasks import Task, get_task

# IMHI set (its folder / file name upstream) -> the task whose labels its answers carry.
SETS: dict[str, str] = {
    "DR": "imhi_dr", "dreaddit": "imhi_dreaddit", "SAD": "imhi_sad", "Irf": "imhi_irf",
    "MultiWD": "imhi_multiwd", "CAMS": "imhi_cams", "loneliness": "imhi_loneliness", "t-sid": "imhi_tsid",
    "swmh": "imhi_swmh",
}
_WITH_TRAIN = ("DR", "dreaddit", "SAD", "Irf", "MultiWD")  # MentalLLaMA released train/val only for these

# Released upstream but absent from the stored snapshot (git blobs >= 4 MiB).
MISSING_IN_SNAPSHOT = frozenset({"Irf/train", "MultiWD/train", "swmh/test", "swmh/test_complete"})

_COLUMNS = ("query", "gpt-3.5-turbo")
# Instruction layout; the greedy post group takes the last `" Question:` because a few posts quote one.
_INSTRUCTION_QUERY = re.compile(r'\AConsider this post: "(?P<post>.*)" Question: (?P<question>[^"]*?)\s*\Z', re.S)
# Completion layout (test_complete): `Post: <post>  Question: The answer to the question "..." is`.
_COMPLETION_QUERY = re.compile(r"\APost: (?P<post>.*)\s+Question: (?P<question>.*?)\s*\Z", re.S)
_ASPECT = re.compile(r"risk of (thwarted belongingness|perceived burdensomeness)|the (\w+) wellness dimension", re.I)
_REASONING = "Reasoning:"


def _part_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for name in SETS:
        if name in _WITH_TRAIN:
            for split in ("train", "val"):
                files[f"{name}/{split}"] = f"train_data/instruction_data/{name}/{split}.csv"
        files[f"{name}/test"] = f"test_data/test_instruction/{name}.csv"
        files[f"{name}/test_complete"] = f"test_data/test_complete/{name}.csv"
    return files


PART_FILES: dict[str, str] = _part_files()


def _normalise(text: str) -> str:
    text = text.replace("\u2019", "'").lower()
    return re.sub(r"\s+", " ", text).strip().rstrip(".!?。 ").strip()


def first_sentence(answer: str) -> str:
    """The label part of an IMHI answer: what precedes ``Reasoning:``, cut at its first sentence end."""
    head = answer.split(_REASONING, 1)[0].strip()
    match = re.match(r"(.+?[.!?])(?=\s|$)", head, re.S)
    return match.group(1) if match else head


def parse_label(task: Task, answer: str) -> str | None:
    """The one label the answer's first sentence names, or None when it names none or several.

    An exact match with a declared name or synonym wins; otherwise every name is searched as a whole phrase,
    longest first, and a shorter name inside an already matched longer one does not count (so "does not suffer
    from depression" is not also read as "depression").
    """
    sentence = _normalise(first_sentence(answer))
    forms = sorted(
        ((_normalise(form), label.id) for label in task.labels for form in label.surface_forms),
        key=lambda item: len(item[0]), reverse=True,
    )
    exact = {label_id for form, label_id in forms if form == sentence}
    if len(exact) == 1:
        return exact.pop()
    taken: list[tuple[int, int]] = []
    found: set[str] = set()
    for form, label_id in forms:
        if not form:
            continue
        for match in re.finditer(rf"(?<!\w){re.escape(form)}(?!\w)", sentence):
            start, end = match.span()
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            taken.append((start, end))
            found.add(label_id)
    return found.pop() if len(found) == 1 else None


@register_dataset
class IMHILoader(ManifestLoader):
    """Parts are ``<set>/<split>``: train / val (instruction data), test (test_instruction), test_complete.

    Folder, source, commit, licence and the SHA-256 of every file come from ``data/manifest.yaml``.
    """

    name = "imhi_mentalllama"
    task = ""  # serves the nine imhi_<set> tasks
    part_names = tuple(PART_FILES)

    def load(self, data_dir: Path, part: str, *, skip_bad_rows: bool = False,
             verify: bool = True) -> tuple[list[Post], LoadReport]:
        set_name = part.split("/", 1)[0]
        if part not in PART_FILES and set_name in SETS and set_name not in _WITH_TRAIN:
            raise ConfigError(f"dataset {self.name} has no part {part!r}: MentalLLaMA released no training data "
                              f"for {set_name}, it is evaluation-only. Parts of {set_name}: "
                              + ", ".join(p for p in PART_FILES if p.startswith(set_name + "/")))
        return super().load(data_dir, part, skip_bad_rows=skip_bad_rows, verify=verify)

    def _path(self, source: Source, part: str) -> Path:
        relative = PART_FILES[part]
        if part in MISSING_IN_SNAPSHOT:
            if not (source.data_dir / self.folder / relative).is_file():
                raise MissingDataError(
                    f"file {relative!r} of dataset {self.name} (part {part})", source.data_dir / self.folder,
                    f"it is released in {self.source} but is >= 4 MiB and absent from the stored snapshot; download "
                    f"{self.source}/blob/{self.commit}/{relative} into {source.data_dir / self.folder}")
            if source.verify and relative not in dataset_entry(self.name).files:
                raise ConfigError(f"{relative} has no recorded SHA-256 (it was absent from the snapshot the loader "
                                  "was written for); pass --no-verify to read it anyway")
        return source.path(relative)

    def read(self, source: Source, part: str) -> list[Post]:
        path = self._path(source, part)
        task = get_task(SETS[part.split("/", 1)[0]])
        posts: list[Post] = []
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or tuple(header[:2]) != _COLUMNS:
                raise BadRowError(path, 1, f"expected the columns {', '.join(_COLUMNS)}, found {header}")
            previous_end = reader.line_num
            try:
                for row_number, row in enumerate(reader, start=1):
                    line, previous_end = previous_end + 1, reader.line_num
                    try:
                        posts.append(self._post(task, part, row_number, row))
                    except ValueError as reason:
                        source.bad(path, line, str(reason))
            except csv.Error as error:  # the CSV itself is broken: no later row can be trusted, so never skipped
                raise BadRowError(path, reader.line_num, f"unreadable CSV ({error})") from None
        return posts

    def _post(self, task: Task, part: str, row_number: int, row: list[str]) -> Post:
        if len(row) != len(_COLUMNS):
            raise ValueError(f"expected {len(_COLUMNS)} fields, found {len(row)}")
        query, response = row
        if not query.strip() or not response.strip():
            raise ValueError("empty query or answer")
        label = parse_label(task, response)
        if label is None:
            names = "; ".join(f"{lab.id}: {lab.en}" for lab in task.labels)
            raise ValueError(f"cannot read one {task.id} label from the answer's first sentence "
                             f"{first_sentence(response)!r}; declared labels: {names}")
        layout = _COMPLETION_QUERY if part.endswith("/test_complete") else _INSTRUCTION_QUERY
        match = layout.match(query)
        text, question = (match["post"].strip(), match["question"]) if match else (query.strip(), "")
        meta: dict[str, str] = {"query": query, "response": response, "question": question}
        if _REASONING in response:
            meta["explanation"] = response.split(_REASONING, 1)[1].strip()
        aspect = _ASPECT.search(question)
        if aspect:
            meta["aspect"] = (aspect.group(1) or aspect.group(2)).lower()
        return Post(id=f"{self.name}:{part}:{row_number}", text=text or query.strip(), labels=(label,),
                    source=self.name, meta=meta)
