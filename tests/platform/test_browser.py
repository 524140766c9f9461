"""The Dagster UI in a real headless Chromium: open the asset graph, materialize `prompts` from
it, watch the run succeed, and save a screenshot of the graph.

Runs when Debian's chromium and chromium-driver are installed (`make browser-deps`, which
`make test` runs as root, as in CI). The screenshot goes to the test's temporary directory, and
also to $SYNTHFACTORY_SCREENSHOT_DIR when set (that is how docs/ui-asset-graph.png was made).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from tests.support import PROJECT_ROOT, tiny_params

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROOT = PROJECT_ROOT

BROWSER_READY = CHROMIUM.exists() and CHROMEDRIVER.exists()
# CI (CI=true) runs `make test` as root, whose browser-deps step installs chromium: there a
# missing browser is a failure, never a silent skip.
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not BROWSER_READY and not IN_CI,
                       reason="needs Debian's chromium and chromium-driver: make browser-deps"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def webserver(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """dagster-webserver on 127.0.0.1:<free port> over the tiny params; yields (url, DAGSTER_HOME,
    the project directory)."""
    if not BROWSER_READY:
        pytest.fail(f"CI=true but {CHROMIUM} or {CHROMEDRIVER} is missing: `make test` installs "
                    "them as root (make browser-deps: apt-get install chromium chromium-driver)")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(tmp_path)))
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The shipped instance config; the webserver runs alone (no daemon), so launched runs start
    # at once instead of waiting in the queue for a daemon to dequeue them.
    config = yaml.safe_load((ROOT / "dagster_home" / "dagster.yaml").read_text())
    config["concurrency"].pop("runs")
    config["run_coordinator"] = {"module": "dagster.core.run_coordinator",
                                 "class": "DefaultRunCoordinator"}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "SYNTHFACTORY_PARAMS": str(params)}
    log = open(tmp_path / "webserver.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-m", "synthfactory.definitions",
         "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, env=env, stdout=log,
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: server.poll() is None and _answers(f"{url}/server_info"), 90,
              "the webserver to answer")
        yield url, home, tmp_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_materialize_prompts_from_the_asset_graph(webserver: tuple[str, Path, Path]) -> None:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    url, home, project = webserver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1800,1100"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        def click_button(text: str) -> bool:
            """Click the first button labelled `text`; False while the page is still rendering."""
            try:
                for button in browser.find_elements(By.TAG_NAME, "button"):
                    if button.text == text:
                        button.click()
                        return True
            except StaleElementReferenceException:  # React replaced it: look again
                pass
            return False

        # The asset graph, filtered to a small selection: the prompts asset.
        browser.get(f"{url}/asset-groups~key%3A%22prompts%22")
        _wait(lambda: "prompts" in browser.find_element(By.TAG_NAME, "body").text, 60,
              "the graph of the selection")
        _wait(lambda: click_button("Materialize"), 60, "the Materialize button of the graph")

        def launched() -> bool:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                return bool(instance.get_runs())
        _wait(launched, 60, "the UI to launch a run")  # leaving the page earlier cancels it

        # The run shows as succeeded in the UI's run list ...
        browser.get(f"{url}/runs")

        def succeeded() -> bool:
            browser.refresh()
            time.sleep(2)
            return "Success" in browser.find_element(By.TAG_NAME, "body").text
        _wait(succeeded, 120, "the run to show Success in the UI")

        # ... and in the instance, and its output is on disk.
        with dg.DagsterInstance.from_config(str(home)) as instance:
            (run,) = instance.get_runs()
            assert run.is_success and run.asset_selection == {dg.AssetKey("prompts")}
        assert (project / "data" / "prompts" / "prompts.jsonl").is_file()

        # The whole graph with its groups expanded, prompts now materialized (green).
        browser.get(f"{url}/asset-groups")
        _wait(lambda: bool(browser.find_elements(By.CSS_SELECTOR, "[class*=collapsedGroupNodeBox]")),
              60, "the asset graph")
        for _ in range(8):  # expanding one group re-renders the others
            collapsed = browser.find_elements(By.CSS_SELECTOR, "[class*=collapsedGroupNodeBox]")
            if not collapsed:
                break
            try:
                collapsed[0].click()
            except StaleElementReferenceException:
                pass
            time.sleep(1)
        browser.get(f"{url}/asset-groups")  # a fresh load fits the expanded graph to the view
        _wait(lambda: "eval_report" in browser.find_element(By.TAG_NAME, "body").text, 60,
              "eval_report in the expanded graph")
        time.sleep(2)
        screenshot = project / "ui-asset-graph.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        if os.environ.get("SYNTHFACTORY_SCREENSHOT_DIR"):
            shutil.copy(screenshot, Path(os.environ["SYNTHFACTORY_SCREENSHOT_DIR"]))
    finally:
        browser.quit()
