"""The manifest covers every loader, and every task split names a part its loader has."""

from __future__ import annotations

import importlib
import re

from mentalglm.data.loaders.base import ManifestLoader
from mentalglm.data.manifest import manifest
from mentalglm.data.registry import all_loaders
from mentalglm.tasks import list_tasks

SHA256 = re.compile(r"^[0-9a-f]{64}$")


def test_every_entry_has_provenance_and_valid_hashes() -> None:
    for name, entry in manifest().items():
        assert entry.folder and entry.source.startswith("https://") and entry.licence, name
        assert entry.files and all(SHA256.match(digest) for digest in entry.files.values()), name


def test_manifest_loaders_take_provenance_from_the_manifest() -> None:
    entries = manifest()
    for name, loader in all_loaders().items():
        if isinstance(loader, ManifestLoader):
            assert name in entries
            assert (loader.folder, loader.source, loader.commit) == (
                entries[name].folder, entries[name].source, entries[name].commit)


def test_imhi_checksums_agree_with_the_manifest() -> None:
    # loaders/imhi.py keeps its own table; both must name the same bytes.
    table = getattr(importlib.import_module("mentalglm.data.loaders.imhi"), "SHA256", None)
    if table is not None:
        assert table == manifest()["imhi_mentalllama"].files


def test_task_splits_name_existing_parts() -> None:
    loaders = all_loaders()
    for task in list_tasks():
        for split in (*task.splits, *task.extra_train):
            if split.dataset in loaders:
                assert split.part in loaders[split.dataset].parts(), (task.id, split)
