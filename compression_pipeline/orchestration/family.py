"""The asset factory: one recipe in, one family of assets, checks, a job and a schedule out.

Keys are ``<family>/<noun>``: ``raw_dataset``, ``splits``, ``<framework>_<model>`` (a trained or compressed
model), ``<framework>_<model>_onnx`` (the ONNX export of a framework-native model), ``tensorflow_<model>_tflite``
(a Keras model's TFLite export), ``<framework>_<model>_benchmark``, ``report`` and ``deployment_candidate``.
Groups are stages. A variant depends on its parent, so the graph is the lineage.
"""


import dagster as dg

from compression_pipeline import stages
from compression_pipeline.artifacts import Handle, HandleStore
from compression_pipeline.methods import get_method
from compression_pipeline.orchestration.automation import AUTOMATION, LAUNCH_TAG, user_file_asset
from compression_pipeline.orchestration.resources import PipelineResource
from compression_pipeline.quality import GATES as DATA_GATES
from compression_pipeline.recipe import Recipe
from compression_pipeline.report import cell, cell_label

KINDS = {"torch": "pytorch", "tensorflow": "tensorflow", "onnx": "onnx", "tflite": "tflite"}
NATIVE = ("torch", "tensorflow")
# Which process a step needs (`make run` runs each phase as one run in a process of its own: orchestration/launch.py)
PHASE_TAG = "compression_pipeline/phase"
DEVICES_TAG = "compression_pipeline/devices"  # how many GPUs a training step uses (shown in the UI)


def gpu_tags(count: int) -> dict:
    """Kubernetes: the step's pod requests ``count`` GPUs (the cluster's scheduler does the per-device accounting)."""
    return {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": str(count)}}}},
            DEVICES_TAG: str(count)}


GPU_TAGS = gpu_tags(1)  # a benchmark step: one GPU


def _checks(key: dg.AssetKey, names, description: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(n, asset=key, blocking=True, description=description) for n in names]


def _emit(handle: Handle, extra_metadata: dict | None = None, output_name: str = "result"):
    """Yield the output (with data version = content hash) and one check result per gate recorded in the handle."""
    meta = {k: v for k, v in handle.info.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    # Structured facts (method config, library versions, the distillation ablation...) as JSON; gates are checks.
    meta.update({k: dg.MetadataValue.json(v) for k, v in handle.info.items()
                 if isinstance(v, dict) and k not in ("gates",)})
    if handle.artifact:
        meta.update(artifact=handle.artifact.path, sha256=handle.artifact.sha256, file_bytes=handle.artifact.bytes)
    meta.update(extra_metadata or {})
    version = dg.DataVersion(handle.artifact.sha256[:16]) if handle.artifact else None
    yield dg.Output(handle, output_name=output_name, metadata=meta, data_version=version)
    for g in handle.info.get("gates", []):
        md = {k: (dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else v) for k, v in g["metadata"].items()}
        yield dg.AssetCheckResult(check_name=g["name"], passed=g["passed"], description=g["description"],
                                  metadata=md, severity=dg.AssetCheckSeverity.ERROR)


def _benchmark_metadata(h: Handle, deployable: Handle) -> dict:
    """Plain numbers the UI plots over time (the asset's Plots tab): per cell its p50, p95, p99, throughput, peak
    memory, and its speedup with the interval's ends; the session's rounds and load."""
    numbers = {}
    for x in h.info["results"]:
        label = cell_label(cell(x)).replace(" ", "_")
        numbers.update({f"{label}_{k}": float(x[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "throughput",
                                                             "peak_host_mb") if x.get(k) is not None})
        if x.get("speedup_ci"):
            numbers.update({f"{label}_speedup": float(x["speedup_vs_baseline"]),
                            f"{label}_speedup_ci_low": float(x["speedup_ci"][0]),
                            f"{label}_speedup_ci_high": float(x["speedup_ci"][1])})
    session = h.info["session"]
    numbers.update(accuracy=float(deployable.info["accuracy"]), model_file_bytes=int(deployable.artifact.bytes),
                   providers=", ".join(sorted({x["provider"] for x in h.info["results"]})),
                   session_id=session["id"], session_rounds=int(session["rounds"]),
                   session_reached_target=bool(session["reached"]), session_under_load=bool(session["under_load"]),
                   session_others_cores=float(session["others_cores_median"] or 0.0))
    if h.info["skipped"]:
        numbers["skipped"] = dg.MetadataValue.json(h.info["skipped"])
    return numbers


def _result(value) -> tuple[Handle, dict]:
    """An asset body returns its handle, or (handle, extra metadata for the UI)."""
    return value if isinstance(value, tuple) else (value, {})


class Family:
    def __init__(self, recipe: Recipe):
        self.r = recipe
        self.assets: list[dg.AssetsDefinition] = []
        # key -> (body, {input name: upstream key}): what each asset computes, without Dagster (scripts/overhead.py);
        # the benchmarks are one session for the family: ``measure``
        self.bodies: dict[dg.AssetKey, tuple] = {}
        self.key = lambda noun: dg.AssetKey([recipe.name, noun])

    # -- keys -------------------------------------------------------------------------------------------
    def model_key(self, fw: str, name: str) -> dg.AssetKey:
        return self.key(f"{fw}_{name}")

    def deployable_key(self, fw: str, name: str) -> dg.AssetKey:
        """The artifact that is evaluated, reported and benchmarked for a model: the ONNX export of a
        framework-native model, else the model itself (an ONNX or TFLite file)."""
        native = self.r.form(name, fw) in NATIVE
        return self.key(f"{fw}_{name}_onnx") if native else self.model_key(fw, name)

    def _asset(self, key, group, ins, fn, *, kinds, phase, checks=(), check_doc="", version_of=(), in_metadata=None,
               **kw):
        r = self.r

        # Two inputs may name the same asset (a variant of the baseline reads it as parent and as reference):
        # Dagster takes each upstream asset once, so load it once and hand it to every name that asks.
        first = {}
        for name, upstream in ins.items():
            first.setdefault(upstream, name)

        @dg.asset(key=key, group_name=group, ins={n: dg.AssetIn(key=k, metadata=in_metadata) for k, n in first.items()},
                  check_specs=_checks(key, checks, check_doc), kinds=set(kinds), io_manager_key="handles",
                  code_version=r.entry_version(*version_of), automation_condition=AUTOMATION,
                  description=(fn.__doc__ or "").strip() or None, tags={PHASE_TAG: phase}, **kw)
        def _body(context: dg.AssetExecutionContext, pipeline: PipelineResource, **inputs):
            handle, extra = _result(fn(context, pipeline, **{n: inputs[first[k]] for n, k in ins.items()}))
            yield from _emit(handle, {**extra, **self._lineage(handle, version_of, ins, inputs, first)})

        self.assets.append(_body)
        self.bodies[key] = (fn, ins)
        return _body

    def baseline_entry(self, fw: str) -> str:
        """The recipe section of ``fw``'s baseline: ``baseline``, or ``baseline.<fw>`` in a list of baselines (so
        editing one framework's baseline leaves the other's models fresh)."""
        return f"baseline.{fw}" if isinstance(self.r.baseline, list) else "baseline"

    def _lineage(self, handle: Handle, version_of, ins, inputs, first) -> dict:
        """What the asset was built from, in its materialization metadata: the recipe entry and config, the parent
        asset and the dataset version (the splits it read). The lineage command and the UI read these; Dagster
        itself records the code and input data versions."""
        r, name = self.r, handle.info.get("name")
        if not name:
            entry = ", ".join(version_of)
        else:
            entry = self.baseline_entry(handle.info.get("framework", "")) if name == "baseline" else f"variants.{name}"
        sections = dict.fromkeys([*entry.split(", "), *version_of])
        config = {k: v for k, v in r.entries(*sections).items() if v is not None}
        meta = {"recipe": r.source_path, "recipe_entry": entry, "recipe_config": dg.MetadataValue.json(config)}
        if ins and (name or len(ins) == 1):  # a model's first input is its parent; the report has many
            meta["parent_asset"] = dg.MetadataValue.asset(next(iter(ins.values())))
        splits = inputs.get(first.get(self.key("splits")))
        if splits is not None and splits.artifact:
            meta["dataset_version"] = splits.artifact.sha256[:16]
        return meta

    # -- the graph --------------------------------------------------------------------------------------
    def build(self) -> list[dg.AssetsDefinition]:
        r = self.r

        def raw_dataset(context, pipeline):
            """The raw dataset, as declared by the recipe's `dataset` block."""
            return stages.raw_dataset(r, pipeline.store(), pipeline.data_root)

        def splits(context, pipeline, raw):
            """Seeded, stratified train/val/test splits scaled into [0, 1], gated by Great Expectations suites."""
            return stages.splits(r, pipeline.store(), raw)

        # A dataset read from a file is an observed source: a new content hash rebuilds the chain below it.
        source = ([user_file_asset(self.key("dataset_file"), r.dataset.path, "dataset", "data")]
                  if r.dataset.path else [])
        # So is a baseline given as a file (trained weights, an ONNX model): a new file rebuilds that baseline's models.
        self.model_file = {}
        for fw, b in r.baselines.items():
            model_file = getattr(b, "weights", None) or getattr(b, "path", None)
            if model_file:
                key = self.key("model_file" if not isinstance(r.baseline, list) else f"{fw}_model_file")
                self.model_file[fw] = user_file_asset(key, model_file, "model file", "models")
        self._asset(self.key("raw_dataset"), "data", {}, raw_dataset, kinds={"numpy"}, phase="data",
                    version_of=("dataset",), deps=[a.key for a in source])
        self._asset(self.key("splits"), "data", {"raw": self.key("raw_dataset")}, splits, kinds={"numpy"}, phase="data",
                    checks=DATA_GATES, check_doc="Great Expectations suite on the splits", version_of=("dataset",))
        self.benchmarked: list[tuple[str, str]] = []
        self.measures: dict[dg.AssetKey, dg.AssetKey] = {}  # benchmark -> the deployable it measures
        for fw in r.baselines:
            self._framework(fw)
        self._benchmarks()
        self._report()
        self._candidate()
        return [*source, *self.model_file.values(), *self.assets]

    def _framework(self, fw: str) -> None:
        r, splits_key = self.r, self.key("splits")

        def baseline(context, pipeline, splits):
            if fw == "onnx":
                return stages.onnx_baseline(r, pipeline.store(), splits, pipeline.data_root, pipeline.threads)
            return stages.baseline(r, pipeline.store(), splits, fw, pipeline.threads, log=context.log.info,
                                   data_root=pipeline.data_root)

        b = r.baselines[fw]
        how = {"zoo": f"the zoo's {getattr(b, 'arch', '')} in {fw}", "import": f"{getattr(b, 'builder', '')} ({fw})",
               "onnx": f"the user's ONNX file {getattr(b, 'path', '')}"}[b.source]
        trained = fw != "onnx" and getattr(b, "train", True)
        baseline.__doc__ = (f"The baseline: {how}, " + ("trained on the training split (best validation epoch "
                            "kept)" if trained else "as given") + "; gated on the accuracy floor.")
        self._asset(self.model_key(fw, "baseline"), "models", {"splits": splits_key}, baseline, kinds={KINDS[fw]},
                    phase=fw, checks=["accuracy_gate"], check_doc="test accuracy >= the recipe's floor",
                    version_of=("dataset", self.baseline_entry(fw), "gates", *self._training_version(fw, "baseline")),
                    deps=[self.model_file[fw].key] if fw in self.model_file else [], **self._on_devices(fw, "baseline"))
        if fw in NATIVE:
            self._exports(fw, "baseline")
        names = [n for n in self._ordered_variants() if fw in r.frameworks_of(n)]
        for name in names:
            form = r.form(name, fw)
            if form in NATIVE:
                self._native_variant(fw, name)
                self._exports(fw, name)
            elif form == "tflite":
                self._tflite_variant(fw, name)
            else:
                self._onnx_variant(fw, name)
        self.benchmarked += [(fw, name) for name in ["baseline", *names]]

    def _ordered_variants(self) -> list[str]:
        return sorted(self.r.variants, key=lambda n: (len(self.r.chain(n)), n))

    def _exports(self, fw: str, name: str) -> None:
        """A framework-native model's deployable ONNX export, plus a Keras model's TFLite export."""
        r = self.r
        ins = {"model": self.model_key(fw, name), "splits": self.key("splits")}
        if name != "baseline":
            ins["baseline_export"] = self.deployable_key(fw, "baseline")

        def export(context, pipeline, model, splits, baseline_export=None):
            """The deployable ONNX export, checked for parity with its source model and gated on accuracy."""
            return stages.export_onnx(r, pipeline.store(), model, splits, baseline_export, pipeline.threads)

        self._asset(self.deployable_key(fw, name), "exports", ins, export, kinds={"onnx"}, phase=fw,
                    checks=["parity", "accuracy_gate"], check_doc="ONNX Runtime parity and accuracy on the export",
                    version_of=("gates", f"variants.{name}"))
        if fw != "tensorflow":
            return

        def tflite(context, pipeline, model, splits, baseline_export=None):
            """The fp32 TFLite export run by LiteRT, checked for parity with the Keras model and gated on accuracy."""
            return stages.export_tflite(r, pipeline.store(), model, splits, baseline_export, pipeline.threads)

        self._asset(self.key(f"{fw}_{name}_tflite"), "exports", ins, tflite, kinds={"tflite"}, phase=fw,
                    checks=["parity", "accuracy_gate"], check_doc="LiteRT parity and accuracy on the TFLite export",
                    version_of=("gates", f"variants.{name}"))

    def _native_variant(self, fw: str, name: str) -> None:
        r, v = self.r, self.r.variants[name]
        ins = {"parent": self.model_key(fw, v.parent), "splits": self.key("splits")}

        def variant(context, pipeline, parent, splits):
            return stages.variant(r, pipeline.store(), name, fw, parent, splits, pipeline.threads,
                                  log=context.log.info, data_root=pipeline.data_root)

        variant.__doc__ = (f"{v.method} of {v.parent} ({get_method(v.method).description}); "
                           f"accuracy measured with {fw}.")
        self._asset(self.model_key(fw, name), "models", ins, variant, kinds={KINDS[fw]}, phase=fw,
                    checks=["accuracy_gate"], check_doc="accuracy drop vs the baseline within the recipe's tolerance",
                    version_of=("gates", f"variants.{name}", *self._training_version(fw, name)),
                    **self._on_devices(fw, name))

    def _training_version(self, fw: str, name: str) -> tuple[str, ...]:
        """The family's ``training`` block is part of a training model's code version once it says anything (a
        variant's own block is inside its entry already); the default block changes no version."""
        r = self.r
        return ("training",) if r.trains(name, fw) and not r.training.defaults() else ()

    def _on_devices(self, fw: str, name: str) -> dict:
        """A step that may train on CUDA claims the recipe's pool (``training.pool``, default ``gpu``) and, on
        Kubernetes, requests its N GPUs. Dagster gives a step one slot of one pool (dagster 1.13: a step has one
        ``pool`` and claims one slot), so N devices cannot be N slots: a pool's slot stands for the machine's GPUs,
        and with the shipped limit 1 a training step on N GPUs runs alone there, as every benchmark does."""
        setup = self.r.training_for(name, fw)
        if not self.r.trains(name, fw) or setup.device == "cpu":
            return {}
        return {"pool": setup.pool, "op_tags": gpu_tags(setup.processes)}

    def _tflite_variant(self, fw: str, name: str) -> None:
        r, v = self.r, self.r.variants[name]
        ins = {"parent": self.model_key(fw, v.parent), "splits": self.key("splits"),
               "baseline_export": self.deployable_key(fw, "baseline")}

        def variant(context, pipeline, parent, splits, baseline_export):
            return stages.tflite_variant(r, pipeline.store(), name, parent, splits, baseline_export,
                                         pipeline.threads)

        variant.__doc__ = (f"{v.method} of {v.parent} ({get_method(v.method).description}); "
                           "accuracy measured with LiteRT.")
        self._asset(self.model_key(fw, name), "models", ins, variant, kinds={"tflite"}, phase=fw,
                    checks=["accuracy_gate"], check_doc="accuracy drop vs the baseline within the recipe's tolerance",
                    version_of=("gates", f"variants.{name}"))

    def _onnx_variant(self, fw: str, name: str) -> None:
        r, v = self.r, self.r.variants[name]
        ins = {"source": self.deployable_key(fw, v.parent), "splits": self.key("splits"),
               "baseline_export": self.deployable_key(fw, "baseline")}

        def variant(context, pipeline, source, splits, baseline_export):
            return stages.onnx_variant(r, pipeline.store(), name, fw, source, splits, baseline_export,
                                       pipeline.threads)

        variant.__doc__ = (f"{v.method} of {v.parent} ({get_method(v.method).description}); "
                           "accuracy measured with ONNX Runtime.")
        self._asset(self.model_key(fw, name), "models", ins, variant, kinds={"onnx"}, phase=fw,
                    checks=["accuracy_gate"], check_doc="accuracy drop vs the baseline within the recipe's tolerance",
                    version_of=("gates", f"variants.{name}"))

    def _benchmarks(self) -> None:
        """Every model's benchmark, measured in one session (one step: a multi-asset with an output per model), so
        each ratio compares cells timed in the same interleaved rounds. Materializing some of them (a subset)
        measures those with their references (each framework's baseline, the PyTorch baseline)."""
        r, ins, outs, of, deps = self.r, {}, {}, {}, {}
        for fw, name in self.benchmarked:
            out = f"{fw}_{name}"
            native = fw in NATIVE and r.form(name, fw) == fw
            of[out] = {"deployable": (f"d_{out}", self.deployable_key(fw, name)),
                       "model": (f"m_{out}", self.model_key(fw, name)) if native else None,
                       "tflite": (f"t_{out}", self.key(f"{fw}_{name}_tflite")) if native and fw == "tensorflow"
                       else None}
            for arg, key in filter(None, of[out].values()):
                ins[arg] = dg.AssetIn(key=key, metadata={"allow_missing": True})
            deps[out] = {key for _, key in filter(None, of[out].values())}
            self.measures[self.key(f"{out}_benchmark")] = self.deployable_key(fw, name)
            kinds = {KINDS[fw], KINDS[r.form(name, fw)]} | ({"onnx"} if r.form(name, fw) != "tflite" else set())
            if native and fw == "tensorflow":
                kinds.add("tflite")
            outs[out] = dg.AssetOut(key=self.key(f"{out}_benchmark"), group_name="benchmarks", kinds=kinds,
                                    io_manager_key="handles", is_required=False, tags={PHASE_TAG: "benchmarks"},
                                    code_version=r.entry_version("benchmark"), automation_condition=AUTOMATION,
                                    description=f"Latency of {out} on every runtime that runs it, measured in the "
                                                "family's interleaved session; speedups with their intervals.")

        @dg.multi_asset(name=f"{r.name}__benchmarks", outs=outs, ins=ins, can_subset=True, pool="gpu",
                        op_tags=GPU_TAGS, internal_asset_deps=deps)
        def benchmarks(context: dg.AssetExecutionContext, pipeline: PipelineResource, **handles):
            """One measurement session: the selected models and their references in interleaved rounds."""
            def load(spec):  # an input Dagster loaded, else (a reference of a subset) the last good handle
                if spec is None:
                    return None
                arg, key = spec
                return handles[arg] if arg in handles else pipeline.last_good(key)

            selected = sorted(context.selected_output_names)
            results, models = self.measure(pipeline, load, selected, context.log)
            for out, h in results.items():
                yield from _emit(h, {**_benchmark_metadata(h, models[out].deployable),
                                     "parent_asset": dg.MetadataValue.asset(of[out]["deployable"][1]),
                                     "recipe": r.source_path, "recipe_entry": "benchmark",
                                     "recipe_config": dg.MetadataValue.json(r.entries("benchmark"))}, out)

        self.assets.append(benchmarks)
        self.sources = of

    def measure(self, pipeline: PipelineResource, load, selected: list[str], log) -> tuple[dict, dict]:
        """The benchmark session's body: ``load`` gives each (argument, asset key) its handle (None: no version
        passed its gates, nothing to measure). Returns (handle per selected model measured, the models)."""
        loaded = {out: {k: load(v) for k, v in n.items()} for out, n in self.sources.items()}
        models = {out: stages.Benchmarkable(**h) for out, h in loaded.items() if h["deployable"] is not None}
        missing = [o for o in selected if o not in models]
        if missing:
            log.warning(f"not benchmarked, no version passed its gates yet: {', '.join(missing)}")
        return stages.benchmarks(self.r, pipeline.store(), models, selected, log=log.info), models

    def _report(self) -> None:
        r = self.r
        names = ["baseline", *self._ordered_variants()]
        pairs = [(fw, n) for fw in r.baselines for n in names if fw in r.frameworks_of(n)]
        ins = {}
        for fw, n in pairs:
            ins[f"d_{fw}_{n}"] = self.deployable_key(fw, n)
            ins[f"b_{fw}_{n}"] = self.key(f"{fw}_{n}_benchmark")

        def report(context, pipeline, **handles):
            """The family comparison: accuracy, drop, params, size, latency and speedup per model (json, md, html),
            and every rejected candidate with the gates it failed."""
            # Models come from their last good handles; one that never passed its gates is only listed as rejected.
            models = [(handles[f"d_{fw}_{n}"], handles[f"b_{fw}_{n}"]) for fw, n in pairs
                      if handles[f"d_{fw}_{n}"] is not None and handles[f"b_{fw}_{n}"] is not None]
            h = stages.report(r, pipeline.store(), models, pipeline.handles().rejected(r.name))
            paths = h.info["paths"]
            return h, {"table": dg.MetadataValue.md(h.info["table"]),
                                      "report_html": dg.MetadataValue.path(paths["html"]),
                                      "report_html_url": dg.MetadataValue.url(f"file://{paths['html']}"),
                                      "report_json": dg.MetadataValue.path(paths["json"]),
                                      "report_md": dg.MetadataValue.path(paths["md"]),
                       "models": h.info["models"], "rejected": h.info["rejected"]}

        self._asset(self.key("report"), "reports", ins, report, kinds={"json", "markdown", "html"}, phase="reports",
                    version_of=("benchmark", "gates"), in_metadata={"allow_missing": True})

    def _candidate(self) -> None:
        r, key = self.r, self.key("deployment_candidate")

        def candidate(context, pipeline, report, splits):
            """The deployment candidate picked by the recipe's `select` rule, with its model card; when no model
            meets the rule, the previous candidate stays and the check says why."""
            h = stages.deployment_candidate(r, pipeline.store(), report, splits, pipeline.last_good(key))
            reasons = h.info["decision"]["reasons"]
            meta = {"rule": h.info["rule"],
                    "not_chosen": dg.MetadataValue.md("| model | why not |\n|---|---|\n" + "".join(
                        f"| {k} | {v} |\n" for k, v in reasons.items()))}
            if h.info.get("candidate"):
                meta["model_card"] = dg.MetadataValue.path(h.info["current"]["model_card"])
            return h, meta

        self._asset(key, "reports", {"report": self.key("report"), "splits": self.key("splits")}, candidate,
                    kinds={"onnx", "markdown"}, phase="reports", checks=["constraints_met"],
                    check_doc="a model met the recipe's select rule (else the previous candidate stays)",
                    version_of=("select", "benchmark", "gates"))


def family_definitions(recipe: Recipe, artifact_root: str) -> tuple[list, list, list, list]:
    """(assets, jobs, schedules, sensors) of one recipe."""
    family = Family(recipe)
    assets = family.build()
    # The job observes the family's dataset file too, so its runs record the dataset version they read.
    observed = dg.AssetSelection.assets(*(a.key for a in assets if isinstance(a, dg.SourceAsset)))
    job = dg.define_asset_job(f"{recipe.name}_recompress",
                              selection=dg.AssetSelection.key_prefixes([recipe.name]) | observed,
                              description=f"Recompress and rebenchmark the {recipe.name} family.")
    schedule = dg.ScheduleDefinition(name=f"{recipe.name}_nightly", job=job, cron_schedule=recipe.schedule,
                                     default_status=dg.DefaultScheduleStatus.RUNNING)
    report_key = dg.AssetKey([recipe.name, "report"])
    report_job = dg.define_asset_job(f"{recipe.name}_report", selection=[*family.measures, report_key],
                                     description=f"Re-measure the last good models of {recipe.name} in one session "
                                                 "and rebuild its report.")

    # A failed gate stops everything downstream of it in its run: the benchmark session (one step for the family)
    # and the report included. This sensor then measures the last good models and rebuilds the report on its own,
    # with the rejected candidates and their gate reasons, so the report says why a variant is missing instead of
    # silently going stale. `make run`'s runs are left alone: its launcher runs the session and the report itself.
    @dg.run_failure_sensor(name=f"{recipe.name}_report_after_failure", monitored_jobs=[job], request_job=report_job,
                           default_status=dg.DefaultSensorStatus.RUNNING)
    def report_after_failure(context: dg.RunFailureSensorContext):
        if LAUNCH_TAG in context.dagster_run.tags:
            return dg.SkipReason("a run of `make run`: its launch measures the models and rebuilds the report")
        # The models with a version that passed its gates (one that never did has nothing to measure, and the
        # report would wait for its benchmark)
        good = HandleStore(artifact_root)
        measured = [k for k, source in family.measures.items() if good.good(tuple(source.path)) is not None]
        return dg.RunRequest(run_key=context.dagster_run.run_id, asset_selection=[*measured, report_key])

    return assets, [job, report_job], [schedule], [report_after_failure]
