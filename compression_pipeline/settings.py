"""Where things live: recipes, user data and artifacts. Environment variables override the defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from compression_pipeline.errors import PipelineError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    recipes_dir: Path
    data_root: Path
    artifact_root: Path
    threads: int | None = None  # training/evaluation threads of every step; None: one per core

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / "dagster_home")
        threads = os.environ.get("COMPRESSION_PIPELINE_THREADS") or None
        if threads is not None and not (threads.isdigit() and int(threads) > 0):
            raise PipelineError(f"COMPRESSION_PIPELINE_THREADS={threads!r}: a positive whole number, or unset")
        return cls(
            recipes_dir=Path(os.environ.get("COMPRESSION_PIPELINE_RECIPES") or PROJECT_ROOT / "assets"),
            data_root=Path(os.environ.get("COMPRESSION_PIPELINE_DATA") or PROJECT_ROOT / "data"),
            artifact_root=Path(os.environ.get("COMPRESSION_PIPELINE_ARTIFACTS") or home / "artifacts"),
            threads=int(threads) if threads else None,
        )


def resolve_inside(root: Path, user_path: str | os.PathLike) -> Path:
    """Resolve ``user_path`` against ``root`` and refuse anything (``..``, absolute paths, symlinks) that leaves it."""
    root = Path(root).resolve()
    candidate = (root / user_path).resolve()
    if candidate != root and root not in candidate.parents:
        raise PipelineError(f"path {str(user_path)!r} resolves to {candidate}, outside the allowed root {root}")
    return candidate
