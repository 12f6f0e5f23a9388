"""The code location: every recipe in the recipes folder becomes a family of assets. This module only composes."""

from __future__ import annotations

import os

import dagster as dg

from compression_pipeline.errors import PipelineError
from compression_pipeline.orchestration.family import family_definitions
from compression_pipeline.orchestration.resources import HandleIOManager, PipelineResource
from compression_pipeline.recipe import load_recipes
from compression_pipeline.settings import Settings


def _executor():
    """COMPRESSION_PIPELINE_EXECUTOR=k8s runs each step in its own Kubernetes pod (dagster-k8s); benchmark steps
    then request a GPU through their ``dagster-k8s/config`` tags. Unset: Dagster's default (multiprocess)."""
    choice = os.environ.get("COMPRESSION_PIPELINE_EXECUTOR", "")
    if choice == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if choice not in ("", "default"):
        raise PipelineError(f"COMPRESSION_PIPELINE_EXECUTOR={choice!r}; allowed: 'k8s', or unset for the default")
    return None


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    assets, jobs, schedules, sensors = [], [], [], []
    for recipe in load_recipes(settings.recipes_dir):
        a, j, s, se = family_definitions(recipe, str(settings.artifact_root))
        assets += a
        jobs += j
        schedules += s
        sensors += se
    root = str(settings.artifact_root)
    # all() leaves out source assets: name the observed dataset files so the sensor observes them too.
    observed = dg.AssetSelection.assets(*(a.key for a in assets if isinstance(a, dg.SourceAsset)))
    return dg.Definitions(
        assets=assets, jobs=jobs, schedules=schedules, executor=_executor(),
        sensors=[dg.AutomationConditionSensorDefinition("automation", target=dg.AssetSelection.all() | observed,
                                                        default_status=dg.DefaultSensorStatus.RUNNING), *sensors],
        resources={"pipeline": PipelineResource(artifact_root=root, data_root=str(settings.data_root),
                                                threads=settings.threads),
                   "handles": HandleIOManager(artifact_root=root)},
    )


defs = build_definitions()


def job_named(name: str) -> dg.JobDefinition:
    """The reconstructor for ``dg.build_reconstructable_job``: each step process rebuilds the job by name."""
    return defs.resolve_job_def(name)
