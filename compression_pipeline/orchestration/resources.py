"""Resources: where artifacts and user data live, and how many threads a step may use."""

from __future__ import annotations

import dagster as dg

from compression_pipeline.artifacts import ArtifactStore, Handle, HandleStore
from compression_pipeline.errors import ArtifactError


class PipelineResource(dg.ConfigurableResource):
    artifact_root: str
    data_root: str
    threads: int | None = None  # torch/ORT threads in training and evaluation; None: one per core

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.artifact_root)

    def handles(self) -> HandleStore:
        return HandleStore(self.artifact_root)

    def last_good(self, key: dg.AssetKey) -> Handle | None:
        """What consumers read for ``key`` now (its last materialization that passed its gates), if any."""
        return self.handles().good(tuple(key.path))


class HandleIOManager(dg.ConfigurableIOManager):
    """Stores each asset's ``Handle`` as JSON (never a pickle) and hands consumers only gated ones.

    Every materialization is kept as ``runs/<run_id>.json``. ``good.json`` moves forward only when the
    handle passed all its gates, and consumers always read ``good.json``: a failed gate never replaces
    the last good artifact that downstream assets, reports and deployments use. An input declared with
    metadata ``allow_missing`` (the report's) gets None instead of an error when nothing has passed yet.
    """

    artifact_root: str

    def _store(self) -> HandleStore:
        return HandleStore(self.artifact_root)

    def handle_output(self, context: dg.OutputContext, obj: Handle) -> None:
        self._store().write(tuple(context.asset_key.path), context.run_id, obj)

    def load_input(self, context: dg.InputContext) -> Handle | None:
        key = context.upstream_output.asset_key if context.upstream_output else context.asset_key
        if (context.definition_metadata or {}).get("allow_missing"):
            return self._store().good(tuple(key.path))
        return self.load_good(key)

    def load_good(self, key: dg.AssetKey) -> Handle:
        handle = self._store().good(tuple(key.path))
        if handle is None:
            raise ArtifactError(f"{key.to_user_string()} has no materialization that passed its gates yet")
        return handle
