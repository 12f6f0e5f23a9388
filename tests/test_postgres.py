"""The team instance for real: deploy/dagster.yaml as shipped, on a real PostgreSQL server.

`make test` installs and starts PostgreSQL on 127.0.0.1 before pytest (scripts/test_services.sh). The connection comes
from DAGSTER_PG_HOST / _PORT / _USERNAME / _PASSWORD / _DB (defaults: the role and database
scripts/test_services.sh makes). Each run of the test creates its own database and a role with a random password,
materializes the data assets of the default family (digits) with the instance's storage in that database, reads the
records back through Dagster and straight from the tables, checks that the password appears nowhere in what the run
recorded, and drops both. If no server answers, the test fails and says how to start one: it never skips silently.
"""

import json
import os
import secrets
import shutil

import dagster as dg
import pytest

from compression_pipeline.definitions import build_definitions
from compression_pipeline.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.postgres

DEFAULTS = {"HOST": "127.0.0.1", "PORT": "5432", "USERNAME": "compression_pipeline",
            "PASSWORD": "compression_pipeline", "DB": "compression_pipeline"}
DATA = ["digits/raw_dataset", "digits/splits"]


def _pg(name: str) -> str:
    return os.environ.get(f"DAGSTER_PG_{name}", DEFAULTS[name])


def _connect(user, password, db):
    import psycopg2

    return psycopg2.connect(host=_pg("HOST"), port=int(_pg("PORT")), user=user, password=password, dbname=db,
                            connect_timeout=5)


@pytest.fixture
def scratch_database():
    """A fresh database owned by a fresh role with a random password: (role, password)."""
    import psycopg2

    admin, error = None, None
    try:
        admin = _connect(_pg("USERNAME"), _pg("PASSWORD"), _pg("DB"))
    except psycopg2.OperationalError as e:
        error = str(e).strip()
    if admin is None:
        pytest.fail(f"PostgreSQL is not reachable at {_pg('HOST')}:{_pg('PORT')} as {_pg('USERNAME')!r} "
                    f"(database {_pg('DB')!r}): {error}\nThe Postgres storage test needs a real server: "
                    f"run scripts/test_services.sh (`make test` runs it before pytest), or point DAGSTER_PG_HOST/"
                    f"PORT/USERNAME/PASSWORD/DB at one.", pytrace=False)
    admin.autocommit = True
    name, password = f"cp_test_{secrets.token_hex(6)}", secrets.token_urlsafe(24)
    with admin.cursor() as cur:
        cur.execute(f'CREATE ROLE "{name}" LOGIN PASSWORD %s', (password,))
        cur.execute(f'GRANT "{name}" TO "{_pg("USERNAME")}"')  # PG 16+: the creator must hold a role to own with it
        cur.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
    try:
        yield name, password
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'DROP ROLE IF EXISTS "{name}"')
        admin.close()


def test_the_default_family_materializes_on_postgres_storage_and_reads_back(tmp_path, monkeypatch, scratch_database):
    role, password = scratch_database
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy/dagster.yaml", home / "dagster.yaml")  # the shipped file, unchanged
    for k, v in {"HOST": _pg("HOST"), "PORT": _pg("PORT"), "USERNAME": role, "PASSWORD": password, "DB": role}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{k}", v)
    monkeypatch.setenv("DAGSTER_K8S_NAMESPACE", "compression-pipeline")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    settings = Settings(PROJECT_ROOT / "assets", tmp_path / "data", tmp_path / "artifacts")
    defs = build_definitions(settings)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey.from_user_string(k) for k in DATA])
        assert result.success
        run_id = result.run_id

    # A new instance object: everything below is read back from the database, not from memory.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.get_run_records()
        assert record.dagster_run.run_id == run_id and record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        for key in DATA:
            event = instance.get_latest_materialization_event(dg.AssetKey.from_user_string(key))
            assert event.run_id == run_id
            meta = event.asset_materialization.metadata
            assert meta["sha256"].value and (settings.artifact_root / meta["artifact"].value).is_file()
        checks = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        evaluations = {e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data.passed
                       for e in checks}
        assert evaluations == {g: True for g in ("schema", "value_range", "no_missing", "labels", "class_balance",
                                                 "row_counts", "no_leakage")}
        events = instance.all_logs(run_id)
        run = instance.get_run_by_id(run_id)
    assert not list(home.rglob("*.db"))  # no SQLite on the side: the history is in Postgres

    conn = _connect(role, password, role)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT run_id, status FROM runs")
            assert cur.fetchall() == [(run_id, "SUCCESS")]
            cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
                        (run_id, "ASSET_MATERIALIZATION"))
            assert cur.fetchone()[0] == len(DATA)
            cur.execute("SELECT event FROM event_logs WHERE run_id = %s", (run_id,))
            stored = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()

    # No secret in what the run recorded: event log (as stored), run config and tags, handles, reports, files.
    from dagster._serdes import serialize_value

    recorded = stored + [serialize_value(e) for e in events] + [json.dumps(run.run_config), json.dumps(run.tags)]
    recorded += [p.read_text(errors="replace") for root in (settings.artifact_root, home) for p in root.rglob("*")
                 if p.is_file()]
    assert len(stored) > 20
    assert not [r for r in recorded if password in r]
