"""CogDis-PR (Mandarin): binary cognitive distortion on counselling questions, and positive reframing pairs."""

from __future__ import annotations

import hashlib

from mentalglm.data.loaders.base import ManifestLoader, Source
from mentalglm.data.readers import Row, RowProblem, check_label
from mentalglm.data.records import Post
from mentalglm.data.registry import register_dataset
from mentalglm.data.splits import normalise_text

PR_FILES = {"pr_train": "PRtrain.json", "pr_test": "PRtest.json"}
# CogDis ships no split: train / validation / test are fixed buckets of the SHA-256 of the normalised sentence
# (70 / 10 / 20 %), so a sentence stays in its part whatever the file order, and repeats stay together.
BUCKETS = {"train": range(0, 7), "validation": range(7, 8), "test": range(8, 10)}


def bucket(text: str) -> int:
    return int(hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest(), 16) % 10
STRATEGIES = tuple(str(n) for n in range(1, 6))


@register_dataset
class CogDis(ManifestLoader):
    """``all`` (and its fixed ``train`` / ``validation`` / ``test`` buckets): labels "1" (distorted) / "0". ``pr_*``: distorted sentences labelled with the reframing
    strategy (1..5), the reframed sentence in ``meta["reconstruction"]``."""

    name = "cogdis"
    task = ""
    part_names = ("all", *BUCKETS, *PR_FILES)

    def read(self, source: Source, part: str) -> list[Post]:
        if part in BUCKETS:
            return [p for p in self.read(source, "all") if bucket(p.text) in BUCKETS[part]]
        if part == "all":
            def make(row: Row) -> Post:
                label = check_label(row.fields["label"], ("0", "1"))
                return source.post(f"all:{row.index}", row.fields["text"], (label,), distorted=label == "1")

            return source.convert(source.tsv("CogDis.txt", fieldnames=["text", "label"], header=False), make)

        def make_pr(row: Row) -> Post:
            strategy = check_label(str(row.fields.get("strategy")), STRATEGIES, "strategy")
            reconstruction = row.fields.get("reconstruction")
            if not isinstance(reconstruction, str) or not reconstruction.strip():
                raise RowProblem("missing reconstruction")
            return source.post(f"{part}:{row.index}", row.fields.get("content"), (strategy,),
                               reconstruction=reconstruction.strip(), strategy=int(strategy))

        return source.convert(source.jsonl(PR_FILES[part]), make_pr)
