"""A Hugging Face hub cache made by hand, laid out as huggingface_hub lays it out
(../shared/field-notes.md): `models--ORG--NAME/refs/main` holds a commit hash,
`snapshots/HASH/FILE` are symlinks to `blobs/SHA256`. No network is needed to read it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_model(folder: Path, cache: Path, model_id: str, under: str = "") -> Path:
    """`folder`'s files as `model_id`'s snapshot in `cache` (under a subfolder, e.g.
    "original"); returns the snapshot folder."""
    repo = cache / ("models--" + model_id.replace("/", "--"))
    commit = hashlib.sha1(model_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    target = snapshot / under if under else snapshot
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(folder).iterdir()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (target / path.name).symlink_to(os.path.relpath(blob, target))
    return snapshot
