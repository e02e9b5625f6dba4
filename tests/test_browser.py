"""Notebook 05 in a real browser: JupyterLab on 127.0.0.1, driven by headless Chromium.

The test starts JupyterLab (a random token, temporary settings, workspace, config and runtime
folders) in a scratch folder holding a copy of notebook 05, opens it in Debian's `chromium`
through its `chromedriver` (selenium), runs all cells in smoke mode on the 70 real sample
images, waits for the widgets to render, moves the melanoma-threshold slider, and checks that
the sensitivity shown changes. A screenshot lands in outputs/browser/.

Without chromium and chromedriver the test skips, except under CI=true, where it fails:
`.ci/run` installs them (`apt-get install chromium chromium-driver`).
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "05_try_the_model.ipynb"
SCREENSHOT = ROOT / "outputs" / "browser" / "05_try_the_model.png"
WIDGETS_TIMEOUT_S = 100  # running every cell in smoke mode takes 15-30 s on 2 cores


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        message = ("needs Debian's chromium and chromium-driver "
                   "(`apt-get install chromium chromium-driver`; .ci/run installs them)")
        if _in_ci():
            pytest.fail(f"CI=true but no browser: {message}")
        pytest.skip(message)
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path, real_sample_dir):
    """A JupyterLab server on 127.0.0.1 serving a scratch folder with notebook 05; yields its URL."""
    pytest.importorskip("jupyterlab")
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "SKINLIB_SMOKE": "1", "SKINLIB_PRETRAINED": "0", "CUDA_VISIBLE_DEVICES": "",
           "SKINLIB_DATA": str(real_sample_dir), "SKINLIB_CACHE": str(tmp_path / "cache"),
           **{name: str(tmp_path / folder) for name, folder in (
               ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
               ("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"))}}
    _saved_model(root, real_sample_dir)
    # Every cell stays in the page (JupyterLab 4 otherwise detaches those scrolled out of view); no news popup.
    for name, settings in (("notebook-extension/tracker", '{"windowingMode": "none"}'),
                           ("apputils-extension/notification", '{"fetchNews": "false"}')):
        path = tmp_path / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(settings)
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--allow-root", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(url, token, server, tmp_path / "jupyterlab.log")
        yield f"{url}/lab/tree/{NOTEBOOK}?token={token}"
    finally:
        server.terminate()  # JupyterLab shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _saved_model(root: Path, data: Path) -> None:
    """Untrained models saved as notebooks 02 and 03 save theirs, for this data and split: the notebook
    then loads them instead of training stand-ins, and the test is about the page, not training."""
    from skinlib.data import load_index
    from skinlib.export import MODEL_FILE, data_fingerprint, export_model
    from skinlib.course import course_networks
    from skinlib.models import build_model
    from skinlib.splits import grouped_split

    frame = load_index(data)
    fingerprint = data_fingerprint(frame, grouped_split(frame, seed=0))
    for architecture, folder, _ in course_networks().values():
        export_model(root / "runs" / folder / MODEL_FILE, build_model(architecture, pretrained=False), architecture,
                     data={"fingerprint": fingerprint})


def _wait_for_server(url: str, token: str, server: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def browser():
    chromium, driver_path = _browser()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if _in_ci():
            raise
        pytest.skip("selenium is not installed (pip install -r requirements.txt)")

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
@pytest.mark.real_data
def test_notebook_05_runs_in_jupyterlab_and_the_threshold_slider_changes_the_sensitivity(browser, jupyterlab):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    started = time.monotonic()
    try:
        browser.get(jupyterlab)
        # The widget replaces its report's HTML on every change, so an element found a moment ago can be
        # gone when its text is read: the wait retries on a stale element instead of failing.
        wait = WebDriverWait(browser, WIDGETS_TIMEOUT_S, ignored_exceptions=(StaleElementReferenceException,))
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        # Once the notebook's kernel is up, Run > Run All Cells, through the menu as a student would.
        wait.until(ready.presence_of_element_located(
            (By.XPATH, "//*[contains(@class, 'jp-StatusBar-TextItem')][contains(text(), '| Idle')]")))
        browser.find_element(By.XPATH, "//div[contains(@class, 'lm-MenuBar-itemLabel')][text()='Run']").click()
        wait.until(ready.element_to_be_clickable(
            (By.XPATH, "//li[contains(@class, 'lm-Menu-item')][.//div[text()='Run All Cells']]"))).click()

        report = ".skinlib-threshold-report .sensitivity"
        try:
            wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, report)))
        except Exception:
            _screenshot(browser)
            errors = [e.text for e in browser.find_elements(
                By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")]
            pytest.fail(f"the threshold widget did not render within {WIDGETS_TIMEOUT_S} s; errors: {errors[-3:]}")
        assert browser.find_elements(By.XPATH, "//*[contains(text(), 'not a medical device')]")
        try:  # the upload comes after the responsible-use section, cells later than the threshold widget
            wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".widget-upload")))
        except Exception:
            _screenshot(browser)
            pytest.fail(f"the upload button is not shown within {WIDGETS_TIMEOUT_S} s")
        before = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, report).text)

        # Type a new threshold into the slider's readout (ipywidgets 8: an editable field), as a user can.
        new_value = "0" if before != "1.000" else "1"
        readout = browser.find_element(By.CSS_SELECTOR, ".skinlib-threshold .widget-readout")
        readout.click()
        readout.send_keys(Keys.CONTROL, "a")
        readout.send_keys(new_value, Keys.ENTER)
        # Threshold 1 refers no lesion (sensitivity 0), threshold 0 every lesion (sensitivity 1).
        expected = "0.000" if new_value == "1" else "1.000"
        seen = [before]

        def shows_expected(b) -> bool:
            seen.append(b.find_element(By.CSS_SELECTOR, report).text)
            return seen[-1] == expected

        try:
            wait.until(shows_expected)
        except TimeoutException:
            pytest.fail(f"threshold {new_value}: the sensitivity shown stayed {seen[-1]!r} "
                        f"(expected {expected!r}, was {before!r} before)")
        _screenshot(browser)
        assert time.monotonic() - started < 120, "the browser test should take under 2 minutes"
    except Exception:
        _screenshot(browser)  # what the page showed when it failed
        SCREENSHOT.with_suffix(".html").write_text(browser.page_source)
        raise


def _screenshot(browser) -> None:
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
