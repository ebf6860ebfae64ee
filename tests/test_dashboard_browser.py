"""The dashboard in a real browser: headless Chromium (Debian's package, driven by Selenium with
its chromedriver) against `accel-signs dashboard` started as a user starts it, on two runs the
test trains. The page must list the runs with both curves, run an evaluation to the end, draw
the confusion matrix (hover names the pair, a click lists its clips), animate a clip in the
inspector, and redraw the augmented skeleton when a lab control changes.

Set ACCEL_SIGNS_SCREENSHOTS=docs to also write the screenshots docs/dashboard.md shows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from accel_signs.data.synth import SynthSpec, write_synthetic
from helpers import chromium_paths, cli_env, free_port, headless_chromium, train_tiny_run

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'accel-signs[serve]')")
pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")

chromium_paths()  # skips the module without a browser, except in CI


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`accel-signs dashboard` on two small runs of KArSL signs 160-165 (eat, drink, sleep, ...)."""
    root = tmp_path_factory.mktemp("dashboard_browser")
    store = write_synthetic(root / "store", SynthSpec(classes=6, signers=2, reps=4, seed=7, first_sign=160))
    runs = root / "runs"
    train_tiny_run(store, runs, "--num-epochs", "2", "--no-eval", name="base")
    train_tiny_run(store, runs, "--num-epochs", "2", "--lr", "0.003", "--no-eval", name="high-lr")
    port = free_port()
    log = open(root / "dashboard.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "accel_signs",
            "dashboard",
            str(runs),
            "--port",
            str(port),
            "--cache-dir",
            str(root / "cache"),
        ],
        env=cli_env(root),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "api/runs", timeout=2).read()
            break
        except OSError:
            assert proc.poll() is None, (root / "dashboard.log").read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the dashboard did not start in 60 s"
            time.sleep(0.3)
    yield url, runs
    proc.terminate()
    proc.wait(30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium("--window-size=1280,1000")
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    error = driver.execute_script("return document.getElementById('error').textContent")
    raise AssertionError(f"{what} within {timeout} s; the page's error: {error!r}")


def _ink(driver, canvas: str) -> int:
    """Pixels of a canvas that are not its background (the top-left pixel's colour)."""
    return driver.execute_script(
        """const c = document.getElementById(arguments[0]);
           const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
           let n = 0; for (let i = 0; i < d.length; i += 4)
             if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2] || d[i + 3] !== d[3]) n++;
           return n;""",
        canvas,
    )


def _shot(driver, tmp_path: Path, name: str) -> None:
    shot = tmp_path / f"dashboard-{name}.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("ACCEL_SIGNS_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["ACCEL_SIGNS_SCREENSHOTS"]) / shot.name)


def test_runs_evaluation_matrix_inspector_and_lab(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    url, runs = server
    before = {str(p): p.stat().st_mtime_ns for p in runs.rglob("*")}
    browser.get(url + "#runs")
    _wait(browser, "return document.body.dataset.ready === '1'", 30, "the page loaded the runs")
    assert browser.execute_script("return document.body.dataset.runs") == "2"
    # Both runs' curves on the charts (the first two runs are selected by default).
    _wait(browser, "return document.body.dataset.curves === '2'", 10, "two runs' curves")
    assert _ink(browser, "chart-loss") > 500 and _ink(browser, "chart-acc") > 300
    names = browser.execute_script("return [...document.querySelectorAll('#runs tbody tr')].map(r => r.dataset.run)")
    assert names == ["base", "high-lr"]
    _wait(browser, "return Number(document.body.dataset.diffRows) >= 1", 10, "the config diff")
    assert "optim.lr" in browser.find_element("id", "diff").text
    _shot(browser, tmp_path, "runs")

    # An evaluation started from the page, to the end; its numbers are metrics.json's.
    browser.find_element("css selector", "nav button[data-view=eval]").click()
    browser.find_element("id", "eval-start").click()
    _wait(browser, "return document.body.dataset.evalState === 'done'", 120, "the evaluation finished")
    assert browser.execute_script("return document.querySelector('#eval-progress span').textContent") == "done"
    top1 = browser.find_element("css selector", "[data-metric=top1] b").text
    cache = [p for p in Path(runs.parent / "cache").rglob("metrics.json")]
    assert len(cache) == 1
    metrics = json.loads(cache[0].read_text("utf-8"))
    assert top1 == f"{metrics['top1']:.4f}"

    # The matrix: drawn, hover names a pair and its count, a click on a cell lists its clips.
    assert browser.execute_script("return document.body.dataset.matrix") == "6"
    assert _ink(browser, "matrix") > 1000
    matrix = browser.find_element("id", "matrix")
    key = browser.execute_script("return document.body.dataset.evalKey")
    page = browser.execute_script(f"return fetch('/api/evaluate/{key}/result').then(r => r.json())")
    assert page["metrics"] == metrics
    counts = page["confusion"]
    best = max(range(36), key=lambda k: counts[k])  # the fullest cell: it has clips to list
    row, col = divmod(best, 6)
    # Offsets count from the centre of the element's visible part (W3C actions): all of it in view.
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", matrix)
    size = matrix.size["width"]
    cell = size / 6
    ActionChains(browser).move_to_element_with_offset(
        matrix, int(-size / 2 + (col + 0.5) * cell), int(-size / 2 + (row + 0.5) * cell)
    ).perform()
    tip = _wait(browser, "return document.getElementById('matrix-tip').textContent", 5, "the hover tip")
    signs = [c["sign"] for c in page["classes"]]
    assert tip.startswith(f"true {signs[row]} ") and f"→ predicted {signs[col]} " in tip
    assert tip.endswith(f": {counts[best]} clip(s)")
    hover_ms = float(_wait(browser, "return document.body.dataset.hoverMs", 5, "the hover timing"))
    assert hover_ms < 1000
    ActionChains(browser).click().perform()
    count = counts[best]
    _wait(browser, "return document.body.dataset.cellClips !== undefined", 5, "the cell's clips")
    assert int(browser.execute_script("return document.body.dataset.cellClips")) == count
    items = browser.find_elements("css selector", "#cell-clips li[data-clip]")
    assert len(items) == count
    # The per-class table sorts and filters.
    browser.find_element("css selector", "#classes th[data-key=f1]").click()
    browser.find_element("id", "class-filter").send_keys("161")
    _wait(browser, "return document.body.dataset.classRows === '1'", 5, "the class filter")
    _shot(browser, tmp_path, "evaluation")

    # The inspector animates a clip: frames advance, pause stops them, the slider moves them.
    items[0].click()
    _wait(
        browser,
        "return document.body.dataset.view === 'inspect' && document.body.dataset.clip !== undefined",
        20,
        "the inspector",
    )
    f0 = int(browser.execute_script("return document.body.dataset.clipFrame"))
    _wait(browser, f"return Number(document.body.dataset.clipFrame) !== {f0}", 5, "the clip animating")
    assert int(browser.execute_script("return document.body.dataset.clipPoints")) > 20
    assert len(browser.find_elements("css selector", "#clip-top li")) == 5
    assert browser.find_element("css selector", "#clip-verdict .verdict").text in ("right", "wrong")
    assert _ink(browser, "presence") > 500
    _shot(browser, tmp_path, "inspector")
    browser.find_element("id", "play").click()
    paused = browser.execute_script("return document.body.dataset.clipFrame")
    time.sleep(0.5)
    assert browser.execute_script("return document.body.dataset.clipFrame") == paused
    with_all = int(browser.execute_script("return document.body.dataset.clipPoints"))
    browser.find_element("css selector", "#parts input[data-part=face]").click()
    assert int(browser.execute_script("return document.body.dataset.clipPoints")) < with_all

    # The lab: a control changed, the augmented skeleton changes, the snippet follows.
    browser.find_element("css selector", "nav button[data-view=lab]").click()
    _wait(browser, "return Number(document.body.dataset.labDraws) >= 1", 30, "the lab's first draw")
    draws = int(browser.execute_script("return document.body.dataset.labDraws"))
    first = browser.execute_script("return document.body.dataset.labSum")
    assert _ink(browser, "lab-augmented") > 200
    box = browser.find_element("css selector", "#lab-controls [data-for=rotate_deg]")
    box.clear()
    box.send_keys("80\n")
    browser.execute_script(
        "document.getElementById('aug-affine_p').value = 1; document.querySelector('[data-for=affine_p]').value = 1; document.getElementById('aug-affine_p').dispatchEvent(new Event('change'))"
    )
    # Two changes, two requests: the page draws the answer to the newer one only.
    _wait(browser, f"return Number(document.body.dataset.labDraws) > {draws}", 30, "the lab redrawn")
    _wait(
        browser,
        "return document.getElementById('lab-snippet').textContent.includes('\"affine_p\": 1')",
        30,
        "the snippet",
    )
    assert browser.execute_script("return document.body.dataset.labSum") != first
    snippet = json.loads(browser.find_element("id", "lab-snippet").text)
    assert snippet["data"]["augment"]["rotate_deg"] == 80 and snippet["data"]["augment"]["affine_p"] == 1
    _shot(browser, tmp_path, "lab")

    browser.find_element("css selector", "nav button[data-view=data]").click()
    _wait(browser, "return document.body.dataset.data === '2'", 30, "the Data page")
    assert "karsl184" in browser.find_element("id", "data-body").text
    _shot(browser, tmp_path, "data")

    # The dark theme draws every view too.
    browser.find_element("id", "theme").click()
    assert browser.execute_script("return document.documentElement.dataset.theme") == "dark"
    for view in ("runs", "eval"):
        browser.find_element("css selector", f"nav button[data-view={view}]").click()
        time.sleep(0.3)
        _shot(browser, tmp_path, f"{view}-dark")
    browser.find_element("id", "theme").click()
    # Nothing in the run folders changed.
    assert {str(p): p.stat().st_mtime_ns for p in runs.rglob("*")} == before

    # A run that is training: a new epoch in its metrics.jsonl reaches the list and the curves.
    live = runs / "live"
    shutil.copytree(runs / "base", live)
    config = json.loads((live / "config.json").read_text("utf-8"))
    (live / "config.json").write_text(json.dumps(config | {"num_epochs": 10}), "utf-8")
    browser.find_element("css selector", "nav button[data-view=runs]").click()
    _wait(browser, "return document.body.dataset.runs === '3'", 15, "the new run listed")
    browser.find_element("css selector", "#runs tr[data-run=live] input").click()
    _wait(browser, "return document.body.dataset.curves === '3'", 15, "three runs' curves")
    last = json.loads((live / "metrics.jsonl").read_text("utf-8").splitlines()[-1])
    with open(live / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(last | {"epoch": last["epoch"] + 1}) + "\n")
    row = "document.querySelector('#runs tr[data-run=live] td.num').textContent"
    _wait(browser, f"return ({row}).startsWith('{last['epoch'] + 1}')", 15, "the new epoch on the page")
    assert "training" in browser.find_element("css selector", "#runs tr[data-run=live]").text
