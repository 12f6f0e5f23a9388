"""Resources: where artifacts and user data live, and how many threads a step may use."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import dagster as dg

from compression_pipeline.artifacts import ArtifactStore, Handle
from compression_pipeline.errors import ArtifactError
from compression_pipeline.settings import resolve_inside


class PipelineResource(dg.ConfigurableResource):
    artifact_root: str
    data_root: str
    threads: int | None = None  # torch/ORT threads in training and evaluation; None: one per core

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.artifact_root)

    def last_good(self, key: dg.AssetKey) -> Handle | None:
        """What consumers read for ``key`` now (its last materialization that passed its gates), if any."""
        try:
            return HandleIOManager(artifact_root=self.artifact_root).load_good(key)
        except ArtifactError:
            return None


class HandleIOManager(dg.ConfigurableIOManager):
    """Stores each asset's ``Handle`` as JSON (never a pickle) and hands consumers only gated ones.

    Every materialization is kept as ``runs/<run_id>.json``. ``good.json`` moves forward only when the
    handle passed all its gates, and consumers always read ``good.json``: a failed gate never replaces
    the last good artifact that downstream assets, reports and deployments use.
    """

    artifact_root: str

    def _dir(self, key: dg.AssetKey) -> Path:
        return resolve_inside(Path(self.artifact_root), Path("_handles", *key.path))

    @staticmethod
    def _write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    def handle_output(self, context: dg.OutputContext, obj: Handle) -> None:
        d = self._dir(context.asset_key)
        text = obj.model_dump_json(indent=1)
        self._write(d / "runs" / f"{context.run_id}.json", text)
        if obj.gates_passed:
            self._write(d / "good.json", text)

    def load_input(self, context: dg.InputContext) -> Handle:
        key = context.upstream_output.asset_key if context.upstream_output else context.asset_key
        return self.load_good(key)

    def load_good(self, key: dg.AssetKey) -> Handle:
        path = self._dir(key) / "good.json"
        if not path.is_file():
            raise ArtifactError(f"{key.to_user_string()} has no materialization that passed its gates yet")
        return Handle.model_validate(json.loads(path.read_text()))
