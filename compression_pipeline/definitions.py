"""The code location: every recipe in the recipes folder becomes a family of assets. This module only composes."""

from __future__ import annotations

import dagster as dg

from compression_pipeline.orchestration.resources import HandleIOManager, PipelineResource
from compression_pipeline.orchestration.family import family_definitions
from compression_pipeline.recipe import load_recipes
from compression_pipeline.settings import Settings


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    assets, jobs, schedules = [], [], []
    for recipe in load_recipes(settings.recipes_dir):
        a, j, s = family_definitions(recipe)
        assets += a
        jobs += j
        schedules += s
    root = str(settings.artifact_root)
    # all() leaves out source assets: name the observed dataset files so the sensor observes them too.
    observed = dg.AssetSelection.assets(*(a.key for a in assets if isinstance(a, dg.SourceAsset)))
    return dg.Definitions(
        assets=assets, jobs=jobs, schedules=schedules,
        sensors=[dg.AutomationConditionSensorDefinition("automation", target=dg.AssetSelection.all() | observed,
                                                        default_status=dg.DefaultSensorStatus.RUNNING)],
        resources={"pipeline": PipelineResource(artifact_root=root, data_root=str(settings.data_root)),
                   "handles": HandleIOManager(artifact_root=root)},
    )


defs = build_definitions()
