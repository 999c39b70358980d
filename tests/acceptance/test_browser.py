"""The Dagster UI in a real browser (Debian's chromium, driven by Selenium through Debian's chromedriver; no
browser download), with the daemon `lookups ui` starts: the settings file is the planted circuit's; the
test adds the planted model and corpus as partition keys (as the UI's "Add partition" does, through its
GraphQL API), the automation sensor materializes the new partition on its own, and the browser shows the
asset graph, the run, an asset's metadata and its check result. Screenshots go to the test's folder (and to
$LOOKUPS_SCREENSHOTS when set)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from servers import free_port, graphql, wait_until_serving, wait_while_progressing

pytestmark = pytest.mark.slow  # a Dagster run through the UI: about 3 minutes (one process per step)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1600,1000",
]


RUNS = "query { runsOrError { ... on Runs { results { runId status stats { ... on RunStatsSnapshot { stepsSucceeded } } } } } }"
REPOSITORY = {"repositoryName": "__repository__", "repositoryLocationName": "lookups"}
SENSOR_TICKS = (
    "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { sensorState { status ticks(limit: 1) { status } } } } }"
)
ADD_PARTITION = (
    "mutation($r: RepositorySelector!, $d: String!, $k: String!) { addDynamicPartition(repositorySelector: $r, partitionsDefName: $d, "
    "partitionKey: $k) { __typename ... on PythonError { message } } }"
)
LATEST = "query($k: AssetKeyInput!) { assetOrError(assetKey: $k) { ... on Asset { assetMaterializations(limit: 1) { runId partition } } } }"
FAILURES = (
    "query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events { __typename "
    "... on ExecutionStepFailureEvent { stepKey error { message cause { message } } } } } } } }"
)


def step_failures(port: int, run_id: str) -> list:
    """The failed steps of a run and their errors, for the assertion message."""
    events = graphql(port, FAILURES, {"id": run_id})["runOrError"]["eventConnection"]["events"]
    return [e for e in events if e["__typename"] == "ExecutionStepFailureEvent"]


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for_text(driver, text: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in driver.find_element("tag name", "body").text:
            return
        time.sleep(0.5)
    raise AssertionError(f"'{text}' never appeared on {driver.current_url}; page text: {driver.find_element('tag name', 'body').text[:2000]}")


def dismiss_welcome(driver) -> None:
    """The first visit shows a "Join the Dagster community" dialog over the page: skip it."""
    for button in driver.find_elements("xpath", "//button[normalize-space(.)='Skip']"):
        if button.is_displayed():
            button.click()
            time.sleep(0.5)


def test_launch_from_the_ui_and_read_the_results(tmp_path, planted_circuit, browser, data_folder):
    config = tmp_path / "planted.yaml"
    run_config = planted_circuit.run_config()
    run_config["ops"]["explanations"] = {"config": {"backend": "contrastive"}}  # the UI is under test here, not the LLM
    config.write_text(yaml.safe_dump(run_config))
    port = free_port()
    shots = Path(os.environ.get("LOOKUPS_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    # The server's output goes to a file: an unread pipe fills up (64 KB) and stalls the run's processes.
    server_log = (tmp_path / "dagster-dev.log").open("w")
    # Runs execute in their own process, steps in it (LOOKUPS_EXECUTOR): the UI is under test, not Dagster's
    # per-step processes (tests/acceptance/test_parallel.py runs those); one torch import instead of twenty-five.
    server = subprocess.Popen(
        [sys.executable, "-m", "lookups.pipeline.cli", "ui", "--port", str(port), "--config", str(config)],
        stdout=server_log, stderr=subprocess.STDOUT, text=True, start_new_session=True, env={**os.environ, "LOOKUPS_EXECUTOR": "in_process"},
    )
    try:
        wait_until_serving(port, server)
        base = f"http://127.0.0.1:{port}"

        browser.get(f"{base}/asset-groups")
        wait_for_text(browser, "head_ablations")
        wait_for_text(browser, "atlas_report")
        dismiss_welcome(browser)
        browser.save_screenshot(str(shots / "1-asset-graph.png"))

        # The automation sensor's first tick records the state; partitions added after it are new to it.
        deadline = time.time() + 300  # the daemon imports the code location first: slow on a loaded machine
        while not graphql(port, SENSOR_TICKS, {"s": {**REPOSITORY, "sensorName": "lookups_automation"}})["sensorOrError"]["sensorState"]["ticks"]:
            assert time.time() < deadline, "the automation sensor never ticked (is the daemon running?)"
            time.sleep(2)
        for dimension, key in (("model", planted_circuit.model_dir), ("corpus", planted_circuit.corpus_path)):
            added = graphql(port, ADD_PARTITION, {"r": REPOSITORY, "d": dimension, "k": key})["addDynamicPartition"]
            assert added["__typename"] == "AddDynamicPartitionSuccess", added
        partition = f"{planted_circuit.corpus_path}|{planted_circuit.model_dir}"  # Dagster orders the dimensions by name

        def progress():
            """The sensor's next tick, then one process per step, each importing torch: on a loaded machine that
            takes as long as it takes, so the test waits while steps keep finishing, not for a fixed time."""
            runs = graphql(port, RUNS)["runsOrError"]["results"]
            failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
            assert not failed, (failed, step_failures(port, failed[0]["runId"]), (tmp_path / "dagster-dev.log").read_text()[-3000:])
            latest = graphql(port, LATEST, {"k": {"path": ["atlas_report"]}})["assetOrError"]["assetMaterializations"]
            done = bool(latest) and latest[0]["partition"] == partition and all(r["status"] == "SUCCESS" for r in runs)
            steps = sorted((r["runId"], r["status"], r["stats"].get("stepsSucceeded")) for r in runs)
            return done, steps, latest and latest[0]["runId"]

        # A step of the planted graph takes seconds; five minutes without one finishing is a hang.
        run_id = wait_while_progressing(progress, stall_s=300, what="the automation's run of the planted partition")
        browser.get(f"{base}/assets/atlas_report?view=partitions")
        wait_for_text(browser, "Materialized (1)")  # the partitions, once loaded
        browser.save_screenshot(str(shots / "2-partitions.png"))
        browser.get(f"{base}/runs/{run_id}")
        wait_for_text(browser, "Success")
        browser.save_screenshot(str(shots / "3-run.png"))

        browser.get(f"{base}/assets/head_neuron_scores")
        wait_for_text(browser, "consistent_pairs")
        browser.save_screenshot(str(shots / "4-asset.png"))
        browser.get(f"{base}/assets/head_neuron_scores?view=checks")
        wait_for_text(browser, "head_scores_valid")
        body = browser.find_element("tag name", "body").text
        assert "Passed" in body or "Succeeded" in body, body[:2000]
        browser.save_screenshot(str(shots / "5-checks.png"))
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
    assert len(list(shots.glob("*.png"))) == 5
