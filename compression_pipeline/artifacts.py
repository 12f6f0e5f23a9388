"""Artifacts: files under one root, written atomically at content-addressed paths, passed around as handles.

A file is first written to a temporary name in its final folder, then renamed into place, so a reader
never sees half a file, and a step killed midway leaves only a ``.tmp`` file nothing reads. The final
name carries the content hash, so a new version never overwrites an old one that someone still uses.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field

from compression_pipeline.errors import ArtifactError
from compression_pipeline.settings import resolve_inside


class Artifact(BaseModel):
    """A small typed handle to one file under the artifact root."""

    model_config = ConfigDict(frozen=True)
    path: str  # relative to the artifact root
    format: str  # npz | safetensors | onnx | json | md | html
    framework: str | None = None
    sha256: str
    bytes: int


class Handle(BaseModel):
    """What an asset passes to its consumers: its artifact (if it has one) plus small JSON-able facts."""

    artifact: Artifact | None = None
    info: dict[str, Any] = Field(default_factory=dict)
    gates_passed: bool = True  # False: stored as a candidate only, never handed to consumers


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ArtifactStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def path(self, artifact: Artifact, verify: bool = False) -> Path:
        p = resolve_inside(self.root, artifact.path)
        if not p.is_file():
            raise ArtifactError(f"artifact {artifact.path} is missing under {self.root}")
        if verify and sha256_file(p) != artifact.sha256:
            raise ArtifactError(f"artifact {artifact.path} does not match its recorded sha256 (corrupt or replaced)")
        return p

    @contextmanager
    def writing(self, folder: str, suffix: str, fmt: str, framework: str | None = None) -> Iterator[Any]:
        """Yield a temporary path to write; on success it is hashed and renamed to ``folder/<sha>.<suffix>``.

        The yielded object has ``.path`` (write there) and, after the block, ``.artifact``.
        """
        target_dir = resolve_inside(self.root, folder)
        target_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target_dir, suffix=f".{suffix}.tmp")
        os.close(fd)
        slot = _Slot(Path(tmp))
        try:
            yield slot
            digest = sha256_file(slot.path)
            final = target_dir / f"{digest[:20]}.{suffix}"
            os.replace(slot.path, final)
            slot.artifact = Artifact(path=str(final.relative_to(self.root)), format=fmt, framework=framework,
                                     sha256=digest, bytes=final.stat().st_size)
        finally:
            if slot.path.exists() and slot.artifact is None:
                slot.path.unlink()

    def write_bytes(self, folder: str, data: bytes, suffix: str, fmt: str, framework: str | None = None) -> Artifact:
        with self.writing(folder, suffix, fmt, framework) as slot:
            slot.path.write_bytes(data)
        return slot.artifact

    def write_text_named(self, rel_path: str, text: str) -> Path:
        """Atomically write a human-facing file at a fixed name (reports): readers see old or new, never half."""
        return self.write_bytes_named(rel_path, text.encode())

    def write_bytes_named(self, rel_path: str, data: bytes) -> Path:
        final = resolve_inside(self.root, rel_path)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, final)
        return final


class _Slot:
    def __init__(self, path: Path):
        self.path = path
        self.artifact: Artifact | None = None
