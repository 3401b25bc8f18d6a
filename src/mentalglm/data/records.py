"""The unit every loader returns: one post with its gold labels for one task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Post:
    """A labelled post.

    ``labels`` are label ids of the task the post belongs to (one for single-label tasks,
    one or more for multi-label ones). ``meta`` keeps what a source adds beyond the label,
    e.g. SOS-4K's reference explanation under ``"explanation"`` or SOS-1K's binary label.
    """

    id: str
    text: str
    labels: tuple[str, ...]
    source: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "labels": list(self.labels), "source": self.source, "meta": self.meta}
