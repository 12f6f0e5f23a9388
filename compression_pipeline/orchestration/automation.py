"""When assets rebuild by themselves: the automation condition of every asset, and the observed dataset file.

- ``AUTOMATION``: Dagster's ``eager()`` with one more trigger, ``code_version_changed()``. Code versions
  are hashes of the recipe entries an asset is built from, so editing one variant (and reloading the code
  location) requests that variant; its descendants follow in the same tick because ``any_deps_updated``
  counts assets that will be requested. ``all_deps_blocking_checks_passed`` keeps automation from building
  on an asset whose gate failed. An update made by `make run` (a run tagged ``LAUNCH_TAG``) triggers nothing:
  the launch builds what stands below it itself, phase after phase, and the sensor of a `make ui` running beside
  it would otherwise request the next phase's assets in the seconds between two phases (seen: the benchmarks and
  the report built twice, side by side on the same cores). An interrupted launch is completed by `make resume`.
- ``user_file_asset``: a dataset read from a file or folder, and a baseline's trained weights or ONNX file, are
  observable source assets whose data version is their content hash. The automation sensor observes them on a
  cron (an observation run is cheap: one hash, no frameworks); only a *changed* hash counts as an update, so
  the chain below rebuilds when the file really changed and not on every observation.
"""

from __future__ import annotations

import warnings

import dagster as dg

from compression_pipeline import data
from compression_pipeline.orchestration.resources import PipelineResource

# How often the automation sensor hashes dataset files: the worst-case delay between a changed file
# and the requested rebuild (plus one sensor interval). One run per tick shows in the Runs page.
OBSERVE_CRON = "*/5 * * * *"

# The tag of every run `make run` starts (orchestration/launch.py): its value is the launch's id.
LAUNCH_TAG = "compression_pipeline/launch"

_c = dg.AutomationCondition
# Dagster's any_deps_updated(), but an update that every new materialization of it came from a launch's runs is no
# trigger.
DEPS_UPDATED = _c.any_deps_match(
    (_c.newly_updated() & ~_c.executed_with_root_target()
     & ~_c.all_new_updates_have_run_tags(tag_keys={LAUNCH_TAG})).with_label("newly_updated_outside_make_run")
    | _c.will_be_requested()
).with_label("any_deps_updated")
# eager(), spelled out, with code_version_changed() as a third trigger next to "newly missing" and
# "a dependency updated (or will be requested this tick)".
AUTOMATION = (
    _c.in_latest_time_window()
    & (_c.newly_missing() | DEPS_UPDATED | _c.code_version_changed()).since_last_handled()
    & ~_c.any_deps_missing()
    & ~_c.any_deps_in_progress()
    & ~_c.in_progress()
).with_label("eager or code version changed") & _c.all_deps_blocking_checks_passed()


def user_file_asset(key: dg.AssetKey, rel_path: str, what: str, group: str) -> dg.SourceAsset:
    """A file (or folder) under the data root that a family reads (its dataset, its baseline's weights or ONNX
    file), observed by content hash: a changed file is a new data version, which rebuilds what reads it."""

    def observe(pipeline: PipelineResource) -> dg.ObserveResult:
        path = data.file_under(pipeline.data_root, rel_path, what)
        digest = data.content_version(path)
        return dg.ObserveResult(data_version=dg.DataVersion(digest),
                                metadata={"path": dg.MetadataValue.path(str(path)), "sha256": digest,
                                          "bytes": data.content_bytes(path)})

    with warnings.catch_warnings():  # observable_source_asset is marked beta; it is the documented way
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.observable_source_asset(
            key=key, group_name=group,
            description=f"The {what} {rel_path} under the data root, versioned by its sha256.",
            automation_condition=dg.AutomationCondition.cron_tick_passed(OBSERVE_CRON),
        )(observe)
