"""The live page in a real browser: headless Chromium (Debian's package, driven by Selenium with
its chromedriver) whose fake camera plays tests/data/signer_video.mp4, against `accel-signs
serve` started as a user starts it. The page must connect, draw the skeleton and show
predictions with the checkpoint's glosses.

Set ACCEL_SIGNS_SCREENSHOT=docs/live.png to also write the screenshot the README shows."""

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
from helpers import chromium_paths, cli_env, free_port, headless_chromium, train_tiny_run, write_y4m

pytest.importorskip("mediapipe", reason="the serve extra is not installed (pip install 'accel-signs[serve]')")
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'accel-signs[serve]')")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")

VIDEO = Path(__file__).parent / "data" / "signer_video.mp4"
chromium_paths()  # skips the module without a browser, except in CI


@pytest.fixture(scope="module", params=["tasks", "holistic"])
def server(request, tmp_path_factory: pytest.TempPathFactory, landmarker_cache):
    """`accel-signs serve --extractor X` on a small model of KArSL signs 160-165 (eat, drink,
    sleep, ...): tasks on the test bundles (conftest), holistic where MediaPipe <= 0.10.21 is; or a
    server already running at ACCEL_SIGNS_TEST_URL that serves ACCEL_SIGNS_TEST_CHECKPOINT, made
    the same way (deploy/test_container.sh: the container), tested once with its own extractor."""
    from accel_signs.extractors.choose import runnable

    extractor = request.param
    if os.environ.get("ACCEL_SIGNS_TEST_URL"):
        if extractor != "tasks":
            pytest.skip("a server already running is tested once, with its own extractor")
        yield os.environ["ACCEL_SIGNS_TEST_URL"], Path(os.environ["ACCEL_SIGNS_TEST_CHECKPOINT"])
        return
    if not runnable(extractor) or (extractor == "tasks" and landmarker_cache is None):
        pytest.skip(f"the installed MediaPipe does not run the {extractor} extractor")
    chosen = ["--extractor", extractor]
    if extractor == "tasks":
        chosen += ["--landmarkers", str(landmarker_cache / "landmarkers")]
    root = tmp_path_factory.mktemp("browser")
    store = write_synthetic(root / "store", SynthSpec(classes=6, signers=2, reps=4, seed=7, first_sign=160))
    best = train_tiny_run(store, root / "runs", "--num-epochs", "2") / "best"
    port = free_port()
    log = open(root / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "accel_signs", "serve", str(best), "--port", str(port), *chosen],
        env=cli_env(root, GLOG_minloglevel="2"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        try:
            info = json.loads(urllib.request.urlopen(url + "api/model", timeout=2).read())
            break
        except OSError:
            assert proc.poll() is None, (root / "serve.log").read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the server did not start in 90 s"
            time.sleep(0.3)
    assert info["extractor"] == extractor
    yield url, best
    proc.terminate()
    proc.wait(30)
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    camera = write_y4m(VIDEO, tmp_path_factory.mktemp("camera") / "signer.y4m")
    args = [
        "--window-size=1280,860",
        "--use-fake-ui-for-media-stream",  # allow the camera without asking
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if os.environ.get("ACCEL_SIGNS_TEST_URL", "").startswith("https:"):
        args.append("--ignore-certificate-errors")  # deploy/test_container.sh's proxy: self-signed
    driver = headless_chromium(*args)
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} within {timeout} s; page status: {driver.find_element('id', 'status').text!r}")


def test_the_page_shows_the_skeleton_and_predictions_from_a_camera(server, browser, tmp_path):
    import json

    url, best = server
    classes = json.loads((best / "config.json").read_text("utf-8"))["classes"]
    browser.get(url)
    _wait(browser, "return document.body.dataset.ready === '1'", 30, "the page got the model's hello")
    assert "6 signs" in browser.find_element("id", "model").text
    browser.find_element("id", "start").click()
    _wait(browser, "return Number(document.body.dataset.frames || 0) >= 15", 90, "15 frames answered")
    # The skeleton is drawn: the overlay has coloured pixels.
    drawn = _wait(
        browser,
        """const c = document.getElementById('overlay');
           const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
           let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
           return n > 200 ? n : 0;""",
        30,
        "a skeleton on the overlay",
    )
    assert drawn > 200
    _wait(browser, "return Number(document.body.dataset.predictions || 0) >= 2", 90, "two predictions")
    # One read of the list: it is redrawn with every prediction.
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#top5 li')].map(li => [...li.querySelectorAll('bdi')].map(b => b.textContent))"
    )
    assert len(rows) == 5
    pairs = {(c["en"], c["ar"]) for c in classes}
    for names in rows:
        assert tuple(names) in pairs, names  # English and Arabic, as the checkpoint names its classes
    status = browser.find_element("id", "status").text
    assert "connected" in status and "frames/s" in status
    assert float(browser.find_element("id", "fps").text) > 0
    browser.find_element("id", "theme").click()
    assert browser.execute_script("return document.documentElement.dataset.theme") in ("dark", "light")
    browser.find_element("id", "theme").click()
    shot = tmp_path / "live.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("ACCEL_SIGNS_SCREENSHOT"):
        shutil.copy(shot, os.environ["ACCEL_SIGNS_SCREENSHOT"])


def test_an_uploaded_video_is_replayed_and_classified_whole(server, browser):
    url, _ = server
    browser.get(url)
    _wait(browser, "return document.body.dataset.ready === '1'", 30, "the page got the model's hello")
    browser.find_element("id", "mode-upload").click()
    browser.find_element("id", "file").send_keys(str(VIDEO.resolve()))
    _wait(browser, "return document.body.dataset.clipResult === '1'", 120, "the uploaded video classified")
    progress = browser.find_element("id", "upload-progress").text
    assert "frames classified whole" in progress, progress
    assert browser.execute_script("return document.querySelectorAll('#top5 li').length") == 5
