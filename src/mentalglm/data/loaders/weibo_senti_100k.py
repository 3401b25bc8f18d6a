"""weibo_senti_100k, a balanced 2,400-post subset: positive / negative (emoticon-distant labels)."""

from __future__ import annotations

from mentalglm.data.loaders.base import ManifestLoader, Source, coded_label_posts
from mentalglm.data.records import Post
from mentalglm.data.registry import register_dataset
from mentalglm.data.splits import carve

CODES = {"0": "negative", "1": "positive"}
TEST_SIZE = 480  # 20%, carved with the project's fixed seed since the subset comes as one file


@register_dataset
class WeiboSenti100k(ManifestLoader):
    name = "weibo_senti_100k"
    task = ""
    part_names = ("all", "train", "test")

    def read(self, source: Source, part: str) -> list[Post]:
        posts = coded_label_posts(source, "weibo_senti_100k_subset2400.csv", "all", CODES, text_column="review")
        if part == "all":
            return posts
        train, test = carve(posts, TEST_SIZE)
        return train if part == "train" else test
