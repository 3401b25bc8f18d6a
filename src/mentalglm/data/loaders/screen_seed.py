"""Posts the project's developers wrote for the screens (data/seed/): never dataset rows, shipped with the package.

The public suicide sets come from one suicide forum: they hold no ordinary post, no hyperbole (笑死, 累死),
no news about someone else's suicide, no hotline post and no past attempt that is over, and few plans written
in evasive or traditional spelling. These invented posts teach the suicide screen those cases. A part is
``<task id>.train`` or ``<task id>.validation`` (a fixed third of the posts by the hash of their normalised text,
so that choosing the screen's weight and threshold also sees plans in plain words and hard negatives); every label
must be one of that task's label ids.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from mentalglm.data.records import Post
from mentalglm.data.registry import DatasetLoader, LoadReport, register_dataset
from mentalglm.data.splits import normalise_text
from mentalglm.errors import BadRowError, ConfigError
from mentalglm.files import read_jsonl_lines

FILES = {"suicide_risk": "suicide_screen.jsonl"}
PARTS = ("train", "validation")


def in_validation(text: str) -> bool:
    return int(hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest(), 16) % 3 == 0


def seed_path(part: str) -> Path:
    return Path(str(resources.files("mentalglm.data") / "seed" / FILES[part]))


@register_dataset
class ScreenSeed(DatasetLoader):
    name = "screen_seed"
    folder = "(package data: mentalglm/data/seed)"
    source = "written by the MentalGLM developers"
    licence = "Apache-2.0"

    def parts(self) -> tuple[str, ...]:
        return tuple(f"{task}.{part}" for task in FILES for part in PARTS)

    def load(self, data_dir: Path, part: str, *, skip_bad_rows: bool = False,
             verify: bool = True) -> tuple[list[Post], LoadReport]:
        if part not in self.parts():
            raise ConfigError(f"dataset {self.name} has no part {part!r}; parts: {', '.join(self.parts())}")
        from mentalglm.tasks import get_task

        task_id, which = part.rsplit(".", 1)
        labels = set(get_task(task_id).label_ids)
        path, posts = seed_path(task_id), []
        for line in read_jsonl_lines(path):
            if line.blank:
                continue
            number, row = line.number, line.value
            try:
                if line.error is not None:
                    raise line.error
                text, label = str(row["text"]).strip(), str(row["label"])
            except (ValueError, KeyError, TypeError) as exc:
                raise BadRowError(str(path), number, f"not a JSON object with text and label ({exc})") from None
            if label not in labels or not text:
                raise BadRowError(str(path), number, f"label {label!r} is not one of {sorted(labels)}, or empty text")
            if in_validation(text) == (which == "validation"):
                posts.append(Post(f"{self.name}:{row.get('id', number)}", text, (label,), self.name,
                                  {"kind": row.get("kind", "")}))
        return posts, LoadReport(files=[str(path)])
