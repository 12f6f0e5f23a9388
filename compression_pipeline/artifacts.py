"""Artifacts: files under one root, written atomically at content-addressed paths, passed around as handles.

A file is first written to a temporary name in its final folder, then renamed into place, so a reader
never sees half a file, and a step killed midway leaves only a ``.tmp`` file nothing reads. The final
name carries the content hash, so a new version never overwrites an old one that someone still uses.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
        _write_atomic(final, data)
        return final


class _Slot:
    def __init__(self, path: Path):
        self.path = path
        self.artifact: Artifact | None = None


class HandleStore:
    """Where assets' handles live: ``_handles/<asset key>/``, one JSON file per materialization.

    ``runs/<run_id>.json`` keeps every materialization, passed or not (the candidates, with their gate
    outcomes); ``good.json`` moves forward only when all the asset's gates passed, and is all that consumers
    read. Every file is written to a temporary name and renamed, so a killed writer leaves no half a handle.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def folder(self, key: tuple[str, ...]) -> Path:
        return resolve_inside(self.root, Path("_handles", *key))

    def write(self, key: tuple[str, ...], run_id: str, handle: Handle) -> None:
        d = self.folder(key)
        text = handle.model_dump_json(indent=1)
        _write_atomic(d / "runs" / f"{run_id}.json", text)
        if handle.gates_passed:
            _write_atomic(d / "good.json", text)

    def good(self, key: tuple[str, ...]) -> Handle | None:
        path = self.folder(key) / "good.json"
        return Handle.model_validate_json(path.read_text()) if path.is_file() else None

    def latest(self, key: tuple[str, ...]) -> tuple[str, Handle] | None:
        """(run id, handle) of the newest materialization, passed or not."""
        runs = list((self.folder(key) / "runs").glob("*.json"))
        if not runs:
            return None
        newest = max(runs, key=lambda p: p.stat().st_mtime_ns)
        return newest.stem, Handle.model_validate_json(newest.read_text())

    def keys(self, prefix: str) -> list[tuple[str, ...]]:
        """Asset keys under ``prefix`` (a family) that have at least one materialization."""
        base = self.folder((prefix,))
        if not base.is_dir():
            return []
        return sorted(tuple(p.parent.relative_to(base.parent).parts) for p in base.glob("**/runs"))

    def rejected(self, prefix: str) -> list[dict]:
        """Assets of a family whose newest candidate failed a gate: what was tried, and why it was turned down."""
        out = []
        for key in self.keys(prefix):
            run_id, h = self.latest(key)
            if h.gates_passed:
                continue
            failed = [g for g in h.info.get("gates", []) if not g["passed"]]
            out.append({"asset": "/".join(key), "run_id": run_id, "name": h.info.get("name"),
                        "framework": h.info.get("framework"), "method": h.info.get("method"),
                        "parent": h.info.get("parent"), "accuracy": h.info.get("accuracy"),
                        "artifact": h.artifact.path if h.artifact else None,
                        "failed_gates": [{"name": g["name"], "description": g["description"]} for g in failed]})
        return out


def _write_atomic(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
