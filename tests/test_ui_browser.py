"""The Dagster UI in a real browser: `dagster dev` (webserver + daemon) driven by headless Chromium.

Starts what `make ui` starts, on 127.0.0.1 and a free port, with a temporary DAGSTER_HOME (a copy of
dagster_home/dagster.yaml) and the TINY recipe; then, in Chromium: the asset graph shows the recipe's groups,
the automation sensor and the nightly schedule are listed and on, a materialization of the data group
launched from the UI succeeds and its seven gates show as passed, and the automation sensor then requests
the rest of the family by itself. Screenshots and the server log go to test-artifacts/ui/.

Needs Debian's chromium at /usr/bin/chromium (or $CHROMIUM); `make test` installs it (scripts/test_services.sh).
Without it the test fails and says so: it is never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from compression_pipeline.settings import PROJECT_ROOT

from conftest import TINY
from servers import dagster_server

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "ui"
GROUPS = ["data", "models", "exports", "benchmarks", "reports"]


@contextmanager
def dagster_dev(tmp_path: Path, log_path: Path):
    """`dagster dev -w workspace.yaml` on a free port with the TINY recipe; yields (base url, seconds until it
    answered)."""
    home, recipes, data, artifacts = (tmp_path / n for n in ("home", "recipes", "data", "artifacts"))
    for d in (home, recipes, data, artifacts):
        d.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    (recipes / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "DAGSTER_HOME": str(home), "COMPRESSION_PIPELINE_RECIPES": str(recipes),
           "COMPRESSION_PIPELINE_DATA": str(data), "COMPRESSION_PIPELINE_ARTIFACTS": str(artifacts)}
    with dagster_server("dev", env, log_path) as served:
        yield served


def test_ui_graph_materialize_checks_and_automation(tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (`apt-get install -y chromium`, "
                    "as `make test` does through scripts/test_services.sh) or point $CHROMIUM at a Chromium binary")
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect, sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    timings = {}
    t_start = time.monotonic()
    with dagster_dev(tmp_path, ARTIFACTS / "dagster-dev.log") as (url, ready_s), sync_playwright() as pw:
        timings["dagster_dev_ready_s"] = ready_s
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)

        def shot(name):
            page.wait_for_timeout(1000)  # let the graph layout and live data settle
            page.screenshot(path=ARTIFACTS / f"{name}.png")

        try:
            # 1. The asset graph lists the recipe's groups (stages).
            page.goto(f"{url}/asset-groups", wait_until="networkidle")
            skip = page.get_by_role("button", name="Skip")  # "Join the Dagster community" on a fresh instance
            try:
                skip.click(timeout=10_000)
            except PlaywrightTimeoutError:
                pass  # the prompt did not appear within 10 s: nothing to dismiss
            expect(page.get_by_text("Global asset lineage").first).to_be_visible()
            for group in GROUPS:
                expect(page.get_by_text(group, exact=True).first).to_be_visible()
            shot("01-asset-graph")

            # 2. The automation sensor and the nightly schedule are listed, and on.
            page.goto(f"{url}/automation", wait_until="networkidle")
            names = ("automation", "tiny_nightly", "tiny_report_after_failure")
            for name in names:
                expect(page.get_by_text(name, exact=True).first).to_be_visible()
            # Their toggles are the only checked boxes (the row-selection boxes are not).
            expect(page.locator("input[type=checkbox]:checked")).to_have_count(len(names))
            shot("02-automation-on")

            # 3. Launch a materialization of the data group (raw_dataset + splits) from the UI.
            page.goto(f"{url}/locations/compression_pipeline.definitions/asset-groups/data", wait_until="networkidle")
            expect(page.get_by_text("raw_dataset", exact=True).first).to_be_visible()
            t_launch = time.monotonic()
            page.get_by_role("button", name="Materialize all").click()
            expect(page.get_by_text("Launched run")).to_be_visible()
            page.get_by_role("link", name="View", exact=True).click()  # the toast's link to the run page
            page.wait_for_url("**/runs/**")
            run_id = page.url.rstrip("/").split("/runs/")[1].split("?")[0]
            expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=240_000)
            t_success = time.monotonic()
            timings["ui_run_s"] = t_success - t_launch
            shot("03-run-success")

            # 4. The seven Great Expectations gates of the splits show as passed.
            page.goto(f"{url}/assets/tiny/splits?view=checks", wait_until="networkidle")
            expect(page.get_by_text("Checks (7)")).to_be_visible()
            expect(page.get_by_text("Succeeded", exact=True)).to_have_count(7)  # one per check in the list
            expect(page.get_by_text("Not Evaluated", exact=True)).to_have_count(0)
            expect(page.get_by_text("Passed", exact=True)).to_be_visible()  # the selected check's result
            shot("04-splits-checks-passed")

            # 5. The daemon's automation sensor sees the new splits and requests the models, by itself.
            page.goto(f"{url}/runs", wait_until="networkidle")
            # Its run targets exactly the seven assets below the splits (models, exports, benchmarks, report and
            # the deployment candidate).
            runs = page.locator("div[data-index]")  # the rows of the (virtualized) runs table
            automation_run = runs.filter(has_text="automation").filter(has_text="7 assets")
            while not automation_run.count():
                assert time.monotonic() - t_success < 180, "the automation sensor launched no run within 180 s"
                page.wait_for_timeout(3000)
                page.reload(wait_until="networkidle")
            timings["automation_run_seen_after_ui_run_s"] = time.monotonic() - t_success
            shot("05-automation-run")
        except BaseException:
            page.screenshot(path=ARTIFACTS / "failure.png")
            (ARTIFACTS / "failure-page.txt").write_text(page.url + "\n\n" + page.inner_text("body"))
            raise
        finally:
            browser.close()
    timings["total_s"] = time.monotonic() - t_start
    timings = {k: round(v, 1) for k, v in timings.items()}
    (ARTIFACTS / "timings.json").write_text(json.dumps({"run_id": run_id, **timings}, indent=1))
    print("browser test timings:", timings)
