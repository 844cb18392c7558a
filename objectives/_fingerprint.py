"""Content fingerprints of a model source: what the model is, not where its files sit.

A study is identified by what it contains, so a study folder that is copied or moved, or
joined from another machine where the files sit under another path, is the same study. The
model file's bytes (a folder: every file's relative path, size and bytes) stand for its path;
a ``keras.applications`` network or a KerasHub preset by name is its name and weights setting.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from thaw.objectives._specs import ModelSource

_CHUNK = 1 << 20


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes; for a folder, of every file's relative path, size and bytes
    (in sorted order, so the same files give the same fingerprint wherever the folder is)."""
    root = Path(path)
    h = hashlib.sha256()
    if root.is_dir():
        for p in sorted(q for q in root.rglob("*") if q.is_file()):
            rel = p.relative_to(root).as_posix()
            h.update(rel.encode() + b"\0" + str(p.stat().st_size).encode() + b"\0")
            _update(h, p)
    else:
        _update(h, root)
    return h.hexdigest()


def _update(h: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def _local(value: str | None) -> Path | None:
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() and p.exists() else None


def model_fingerprint(source: ModelSource) -> str:
    """The model's content fingerprint (see the module docstring)."""
    h = hashlib.sha256(f"kind={source.kind}\0".encode())
    if source.path is not None:
        h.update(b"file=" + file_fingerprint(source.path).encode() + b"\0")
    name = _local(source.name)
    if name is not None:
        h.update(b"preset=" + file_fingerprint(name).encode() + b"\0")
    elif source.name:
        h.update(f"name={source.name}\0".encode())
    weights = _local(source.weights)
    if weights is not None:
        h.update(b"weights=" + file_fingerprint(weights).encode() + b"\0")
    else:
        h.update(f"weights={source.weights}\0".encode())
    return h.hexdigest()
