"""simplifyweibo_4_moods, a balanced 2,000-post subset: joy / anger / disgust / sad."""

from __future__ import annotations

from mentalglm.data.loaders.base import ManifestLoader, Source, coded_label_posts
from mentalglm.data.records import Post
from mentalglm.data.registry import register_dataset

CODES = {"0": "joy", "1": "anger", "2": "disgust", "3": "sad"}


@register_dataset
class SimplifyWeibo4Moods(ManifestLoader):
    name = "simplifyweibo_4_moods"
    task = ""
    part_names = ("all", "train", "test")

    def read(self, source: Source, part: str) -> list[Post]:
        files = ("train", "test") if part == "all" else (part,)
        return [post for name in files for post in coded_label_posts(source, f"{name}.csv", name, CODES)]
