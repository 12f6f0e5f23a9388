"""The shipped team configuration (deploy/dagster.yaml) is valid Dagster instance config, keeps its secrets in the
environment, and the Kubernetes parts request what they should: one pod per step, a GPU for each benchmark.

(The Postgres part runs for real in test_postgres.py; a Kubernetes cluster is not available to the tests, so the
launcher and executor are checked against dagster-k8s's own config schema and tag parser.)
"""

import re

import pytest
import yaml

from compression_pipeline.definitions import build_definitions
from compression_pipeline.errors import PipelineError
from compression_pipeline.settings import PROJECT_ROOT, Settings

DEPLOY = PROJECT_ROOT / "deploy" / "dagster.yaml"
ENV = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USERNAME": "dagster",
       "DAGSTER_PG_PASSWORD": "s3cret", "DAGSTER_PG_DB": "dagster", "DAGSTER_K8S_NAMESPACE": "ml"}


@pytest.fixture
def env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


def test_the_team_instance_config_is_valid_and_holds_no_secret(env):
    from dagster._config import Shape, process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres.utils import pg_config, pg_url_from_config

    config, _ = dagster_instance_config(str(DEPLOY.parent), DEPLOY.name)
    pg = config["storage"]["postgres"]
    resolved = process_config(Shape(pg_config()), pg)  # dagster-postgres's own schema, env values filled in
    assert resolved.success, resolved.errors
    # The URL Dagster will use: psycopg2 spelled out (PITFALLS), every part from the environment.
    assert pg_url_from_config(resolved.value) == "postgresql+psycopg2://dagster:s3cret@db.internal:5432/dagster"
    assert all(isinstance(pg["postgres_db"][k], dict) and "env" in pg["postgres_db"][k]
               for k in ("hostname", "port", "username", "password", "db_name"))
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1 and config["concurrency"]["runs"]["max_concurrent_runs"]
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    checked = process_config(K8sRunLauncher.config_type(), launcher["config"])
    assert checked.success, checked.errors
    assert "COMPRESSION_PIPELINE_EXECUTOR=k8s" in launcher["config"]["env_vars"]
    # Nothing that looks like a password is written in the file itself.
    raw = DEPLOY.read_text()
    assert "s3cret" not in raw and not re.search(r"password:\s*[^{\s]", raw)


def test_k8s_executor_gives_each_step_a_pod_and_the_benchmark_session_a_gpu(monkeypatch, tmp_path):
    from dagster_k8s.job import get_user_defined_k8s_config

    monkeypatch.setenv("COMPRESSION_PIPELINE_EXECUTOR", "k8s")
    defs = build_definitions(Settings(PROJECT_ROOT / "assets", tmp_path / "data", tmp_path / "artifacts"))
    job = defs.resolve_job_def("digits_recompress")
    assert job.executor_def.name == "k8s"
    gpus = {}
    for node in job.graph.node_dict.values():
        resources = get_user_defined_k8s_config(node.definition.tags).container_config.get("resources", {})
        gpus[node.name] = resources.get("limits", {}).get("nvidia.com/gpu")
    # one step measures every model of the family in one session (24 here: 13 PyTorch, 11 TensorFlow)
    assert {n for n, g in gpus.items() if g == "1"} == {"digits__benchmarks"}
    assert len(job.graph.node_dict["digits__benchmarks"].definition.output_defs) == 24
    assert all(g is None for n, g in gpus.items() if n != "digits__benchmarks")


def test_an_unknown_executor_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPRESSION_PIPELINE_EXECUTOR", "slurm")
    with pytest.raises(PipelineError, match="COMPRESSION_PIPELINE_EXECUTOR='slurm'; allowed: 'k8s'"):
        build_definitions(Settings(PROJECT_ROOT / "assets", tmp_path / "data", tmp_path / "artifacts"))


def test_the_default_instance_is_unchanged_sqlite():
    config = yaml.safe_load((PROJECT_ROOT / "dagster_home/dagster.yaml").read_text())
    assert "sqlite" in config["storage"] and "run_launcher" not in config
