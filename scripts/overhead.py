"""The cost of orchestration: `make run` against the same asset bodies called in one plain Python process.

    .venv/bin/python scripts/overhead.py [--family digits] [--out DIR]

Both materialize the family's every asset from scratch, from the same recipe (same seeds, the same benchmark
protocol), each on fresh roots, one after the other in this run:

1. plain: one Python process calls each asset's body (what the Dagster asset calls: the library, once) in the
   graph's order, handing the handles along in memory; no Dagster instance, no events, no processes;
2. launcher: `python -m compression_pipeline run <family>` (what `make run` does), on a fresh instance.

It prints both wall times and their ratio. The plain process runs everything one step after another on the
default thread count; the launcher may run the frameworks' training phases side by side (see
orchestration/launch.py), so its ratio can fall below 1: the overhead is then more than paid for.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def plain(family: str, artifacts: Path) -> int:
    """Every asset body of ``family`` in graph order in this process; returns the number of assets built."""
    import dagster as dg

    from compression_pipeline.orchestration.family import Family
    from compression_pipeline.orchestration.resources import HandleIOManager, PipelineResource
    from compression_pipeline.recipe import load_recipes
    from compression_pipeline.settings import Settings

    settings = Settings.from_env()
    recipe = next(r for r in load_recipes(settings.recipes_dir) if r.name == family)
    fam = Family(recipe)
    fam.build()
    pipeline = PipelineResource(artifact_root=str(artifacts), data_root=str(settings.data_root),
                                threads=settings.threads)
    resources = {"pipeline": pipeline, "handles": HandleIOManager(artifact_root=str(artifacts))}
    graph = dg.Definitions(assets=fam.assets, resources=resources).resolve_asset_graph()
    context = SimpleNamespace(log=SimpleNamespace(info=lambda message: None))
    handles, built = {}, 0
    for key in graph.toposorted_asset_keys:
        if key in fam.measures and key not in handles:  # the family's benchmark session, once, as the step runs it
            log = SimpleNamespace(info=lambda message: None, warning=lambda message: None)
            outs = [k.path[-1][: -len("_benchmark")] for k, src in fam.measures.items() if src in handles]
            results, _ = fam.measure(pipeline, lambda spec: spec and handles.get(spec[1]), outs, log)
            handles.update({fam.key(f"{out}_benchmark"): h for out, h in results.items()})
            built += len(results)
        if key not in fam.bodies:
            continue  # an observed source (the dataset file), or a benchmark: measured above
        fn, ins = fam.bodies[key]
        if any(upstream not in handles for upstream in ins.values()):
            continue  # a gate upstream failed: as in a run, nothing is built on it
        value = fn(context, pipeline, **{name: handles[upstream] for name, upstream in ins.items()})
        handle = value[0] if isinstance(value, tuple) else value
        built += 1
        if handle.gates_passed:
            handles[key] = handle
    return built


def timed(cmd: list[str], env: dict, log: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.run(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    return time.perf_counter() - t0, code


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="digits")
    parser.add_argument("--out", help="keep both runs' roots and logs here (default: a temporary folder)")
    parser.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)  # the plain process itself
    args = parser.parse_args(argv)
    if args.plain_only:
        t0 = time.perf_counter()
        n = plain(args.family, Path(os.environ["COMPRESSION_PIPELINE_ARTIFACTS"]))
        print(f"plain: {n} assets in {time.perf_counter() - t0:.1f} s")
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="overhead_"))
    walls, failed = {}, []
    for name in ("plain", "launcher"):
        folder = out / name
        (folder / "home").mkdir(parents=True, exist_ok=True)
        (folder / "home" / "dagster.yaml").write_text((ROOT / "dagster_home/dagster.yaml").read_text())
        env = {**os.environ, "DAGSTER_HOME": str(folder / "home"),
               "COMPRESSION_PIPELINE_ARTIFACTS": str(folder / "artifacts")}
        cmd = ([sys.executable, __file__, "--plain-only", "--family", args.family] if name == "plain" else
               [sys.executable, "-m", "compression_pipeline", "run", args.family])
        walls[name], code = timed(cmd, env, folder / "log.txt")
        print(f"{name}: {walls[name]:.1f} s wall ({walls[name] / 60:.2f} min), exit {code}, log {folder / 'log.txt'}",
              flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nno ratio: {', '.join(failed)} failed (see the log)")
        return 1
    print(f"\nlauncher / plain: {walls['launcher'] / walls['plain']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
