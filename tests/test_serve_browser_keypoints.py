"""MediaPipe in the page, in a real browser: headless Chromium runs the vendored MediaPipe Tasks
for Web on the fake camera playing tests/data/signer_video.mp4 and sends keypoints; the server
(real sockets on 127.0.0.1) must get predictions from them and receive no image at all. Then the
same frames through the page's landmarkers and through the Python tasks extractor: the same
keypoints, to MediaPipe's own precision, and the same answer from the model.

The bundles are the test bundles of tests/make_landmarkers.py (the conftest's landmarker cache).
The figures this prints (-s) are the ones docs/live.md reports. Set
ACCEL_SIGNS_SCREENSHOT=docs/live.png to also write the screenshot the docs show."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import test_serve_browser
from test_serve_browser import VIDEO, _wait

from accel_signs.data.synth import SynthSpec, write_synthetic
from helpers import free_port, train_tiny_run

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'accel-signs[serve]')")
cv2 = pytest.importorskip("cv2")


class CountingApp:
    """The app behind a counter of what arrives over its WebSockets: binary (images) and text."""

    def __init__(self, app):
        self.app, self.binary, self.text = app, 0, 0

    async def __call__(self, scope, receive, send):
        async def counted():
            message = await receive()
            if message["type"] == "websocket.receive":
                if message.get("bytes") is not None:
                    self.binary += 1
                else:
                    self.text += 1
            return message

        await self.app(scope, counted if scope["type"] == "websocket" else receive, send)


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """The real video's frames (RGB) and the same frames as lossless PNG files for the page."""
    from accel_signs.extractors.base import read_frames

    frames = list(read_frames(VIDEO)[0])
    out = tmp_path_factory.mktemp("frames")
    for i, frame in enumerate(frames):
        cv2.imwrite(str(out / f"{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return out, frames


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, landmarker_cache, frames_dir):
    """The app of `accel-signs serve --extractor tasks` on the test bundles, behind the counter,
    with the video's frames under /testframes (same origin: the page's canvas stays readable)."""
    import uvicorn
    from fastapi.staticfiles import StaticFiles

    from accel_signs.extractors.choose import ExtractorChoice
    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.serve.app import create_app
    from accel_signs.serve.config import ServeConfig

    if landmarker_cache is None:
        pytest.skip("the installed MediaPipe has no Tasks API: no landmarker bundles for the page")
    root = tmp_path_factory.mktemp("browser-keypoints")
    store = write_synthetic(root / "store", SynthSpec(classes=6, signers=2, reps=4, seed=7, first_sign=160))
    best = train_tiny_run(store, root / "runs", "--num-epochs", "2") / "best"
    bundles = landmarker_cache / "landmarkers"
    cfg = ServeConfig(checkpoint=str(best), port=free_port(), extractor="tasks", landmarkers=bundles)
    app = create_app(None, cfg)  # loads as `serve` does: the model, MediaPipe, the page's bundles
    app.mount("/testframes", StaticFiles(directory=frames_dir[0]), name="testframes")
    counting = CountingApp(app)
    server = uvicorn.Server(uvicorn.Config(counting, host="127.0.0.1", port=cfg.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{cfg.port}/"
    deadline = time.monotonic() + 120
    while True:  # /readyz: the model loaded and MediaPipe started
        try:
            urllib.request.urlopen(url + "readyz", timeout=5).read()
            break
        except OSError:
            assert time.monotonic() < deadline and thread.is_alive(), "the server was not ready in 120 s"
            time.sleep(0.2)
    info = json.loads(urllib.request.urlopen(url + "api/model", timeout=5).read())
    assert set(info["landmarkers"]) == {"pose", "hands", "face"}  # the page gets the server's bundles
    ckpt = load_checkpoint(best)
    yield url, counting, ckpt, ExtractorChoice("tasks", bundles)
    server.should_exit = True
    thread.join(30)


browser = test_serve_browser.browser  # the same headless Chromium, its fake camera playing the video


def test_the_page_runs_mediapipe_and_sends_only_keypoints(server, browser, tmp_path):
    url, counting, _, _ = server
    browser.get(url)
    _wait(browser, "return document.body.dataset.ready === '1'", 120, "the page loaded MediaPipe")
    where = browser.execute_script("return document.body.dataset.where")
    assert where == "browser", browser.find_element("id", "where").get_attribute("title")
    binary_before = counting.binary
    browser.find_element("id", "start").click()
    _wait(browser, "return Number(document.body.dataset.keypointsSent || 0) >= 30", 120, "30 keypoint frames sent")
    _wait(browser, "return Number(document.body.dataset.predictions || 0) >= 2", 120, "two predictions")
    drawn = browser.execute_script(
        """const c = document.getElementById('overlay');
           const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
           let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;"""
    )
    assert drawn > 200  # the page drew the skeleton it found itself
    shot = tmp_path / "live.png"
    browser.save_screenshot(str(shot))
    if os.environ.get("ACCEL_SIGNS_SCREENSHOT"):
        shutil.copy(shot, os.environ["ACCEL_SIGNS_SCREENSHOT"])
    browser.find_element("id", "stop").click()
    sent = int(browser.execute_script("return document.body.dataset.keypointsSent"))
    assert counting.binary == binary_before == 0, "an image left the browser in keypoint mode"
    assert counting.text >= sent  # every keypoint message arrived (and the controls)
    print(f"\nbrowser mode: {sent} keypoint messages, {counting.binary} binary frames at the server")


def test_the_page_and_the_python_extractor_agree_on_the_real_video(server, browser, frames_dir):
    """The same frames (lossless PNG) through the page's landmarkers and the Python tasks
    extractor, both in VIDEO mode at 30 frames/s: keypoints and the model's answer compared."""
    from accel_signs.tools.inference import classify

    url, _, ckpt, choice = server
    folder, frames = frames_dir
    browser.get(url)
    _wait(browser, "return document.body.dataset.ready === '1'", 120, "the page loaded MediaPipe")
    browser.set_script_timeout(300)  # 58 frames through MediaPipe in WebAssembly
    found = browser.execute_async_script(
        """const [count, done] = [arguments[0], arguments[arguments.length - 1]];
        (async () => {
          const { BrowserTracker } = await import('/static/landmarks.js');
          const model = await (await fetch('/api/model')).json();
          const tracker = await BrowserTracker.create(model);
          const out = [];
          for (let i = 0; i < count; i++) {
            const image = new Image();
            image.src = `/testframes/${String(i).padStart(4, '0')}.png`;
            await image.decode();
            out.push(tracker.detect(image, i * 1000 / 30).points);
          }
          tracker.close();
          return out;
        })().then(done, (e) => done(String(e)));""",
        len(frames),
    )
    assert isinstance(found, list), found
    page = np.array(found, dtype=np.float32)  # (T, P, 4)
    tracker = choice.open(ckpt.layout, fps=30.0)
    try:
        python = np.stack([tracker(frame).keypoints for frame in frames])
    finally:
        tracker.close()
    assert page.shape == python.shape
    both = (page[..., :2] != 0).any(-1) & (python[..., :2] != 0).any(-1)
    only_one = ((page[..., :2] != 0).any(-1) != (python[..., :2] != 0).any(-1)).mean()
    diff = np.abs(page[..., :2] - python[..., :2])[both]
    size = (float(frames[0].shape[1]), float(frames[0].shape[0]))
    top_page, top_python = classify(ckpt, page, size), classify(ckpt, python, size)
    p_page = {t["class_id"]: t["probability"] for t in top_page}
    p_python = {t["class_id"]: t["probability"] for t in top_python}
    largest = max(abs(p_page.get(c, 0.0) - p) for c, p in p_python.items())
    print(
        f"\npage vs Python tasks on {len(frames)} frames: points found by one only {only_one:.2%}; x, y difference "
        f"median {np.median(diff):.5f}, p99 {np.percentile(diff, 99):.5f}; top-1 {top_page[0]['en']} vs "
        f"{top_python[0]['en']}; largest probability difference {largest:.4f}"
    )
    assert only_one < 0.02
    assert np.median(diff) < 0.005  # the same models, WASM vs native: MediaPipe's own precision
    assert top_page[0]["class_id"] == top_python[0]["class_id"]
    assert largest < 0.05


# Before the page's own scripts: keep its WebSocket reachable (to play the server's part) and
# record what it would speak instead of speaking.
SPY = """
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) { super(...args); window.__ws = this; }
};
window.__spoken = [];
window.speechSynthesis.speak = (u) => window.__spoken.push([u.text, u.lang]);
window.confirm = () => true;
"""


def test_daily_use_sentence_speech_drawing_and_session_log(server, browser):
    """The page's own features, in the real browser: the sentence skips a sign repeated back to
    back, each new sign is spoken in the chosen language, the drawing controls and the choices
    survive a reload, and the session log is kept in the browser and exported as text."""
    url, _, ckpt, _ = server
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": SPY})
    browser.get(url)
    _wait(browser, "return document.body.dataset.ready === '1'", 120, "the page got the model's hello")
    browser.execute_script("localStorage.clear()")
    browser.get(url)
    _wait(browser, "return document.body.dataset.ready === '1'", 120, "the page got the model's hello")
    from selenium.webdriver.support.ui import Select as select

    select(browser.find_element("id", "speech-lang")).select_by_value("ar")
    browser.find_element("id", "auto-speak").click()
    browser.find_element("id", "draw-face").click()
    select(browser.find_element("id", "draw-style")).select_by_value("points")
    eat, drink = (
        {"rank": 1, "probability": 0.9, **c, "class_id": i} for i, c in enumerate(ckpt.meta.classes_json()[:2])
    )
    for sign in (eat, eat, drink):  # as the server sends them
        browser.execute_script(
            "window.__ws.onmessage({data: JSON.stringify(Object.assign({type: 'accepted', seq: 1}, arguments[0]))})",
            sign,
        )
    chips = browser.execute_script("return [...document.querySelectorAll('#sentence .chip')].map(c => c.textContent)")
    assert chips == [eat["ar"], drink["ar"]]  # the repeat is skipped
    assert len(browser.find_elements("css selector", "#history li")) == 3  # the history keeps each
    assert browser.execute_script("return window.__spoken") == [[eat["ar"], "ar"], [drink["ar"], "ar"]]

    browser.get(url)  # another visit: the choices and the log are still there
    _wait(browser, "return document.body.dataset.ready === '1'", 120, "the page got the model's hello")
    assert browser.find_element("id", "speech-lang").get_attribute("value") == "ar"
    assert browser.find_element("id", "auto-speak").is_selected()
    assert not browser.find_element("id", "draw-face").is_selected()
    assert browser.find_element("id", "draw-pose").is_selected()
    assert browser.find_element("id", "draw-style").get_attribute("value") == "points"
    assert "1 kept" in browser.find_element("id", "sessions-count").get_attribute("textContent")
    assert eat["en"] in browser.find_element("id", "sessions").text
    text = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        HTMLAnchorElement.prototype.click = function () { fetch(this.href).then(r => r.text()).then(done); };
        document.getElementById('export-log').click();"""
    )
    assert "3 sign(s)" in text and eat["ar"] in text and drink["en"] in text, text
    browser.find_element("id", "clear-log").click()
    assert "0 kept" in browser.find_element("id", "sessions-count").get_attribute("textContent")
    assert browser.execute_script("return localStorage.getItem('accel_signs.sessions')") is None
