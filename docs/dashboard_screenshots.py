"""Take docs/dashboard.md's screenshots from a running `accel-signs dashboard` in headless
Chromium (Debian's chromium and chromium-driver, selenium from the dev extra): every view in
the light theme, the runs and evaluation views in the dark one.

    accel-signs dashboard runs --port 8050 &
    python docs/dashboard_screenshots.py http://127.0.0.1:8050/ docs [--run RUN] [--clip N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import headless_chromium  # noqa: E402


def _wait(driver, script: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{script}; the page's error: {driver.find_element('id', 'error').text!r}")
        time.sleep(0.2)


def _view(driver, name: str) -> None:
    driver.find_element("css selector", f"nav button[data-view={name}]").click()
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.6)


def main() -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--run", help="the run to evaluate and inspect (default: the first with a checkpoint)")
    parser.add_argument("--clip", type=int, default=None, help="the clip to inspect (default: the first listed)")
    args = parser.parse_args()
    driver = headless_chromium("--window-size=1280,900", skip_if_missing=False)
    shot = lambda name: driver.save_screenshot(str(args.out / f"dashboard-{name}.png"))  # noqa: E731
    try:
        driver.get(args.url + "#runs")
        driver.execute_script("localStorage.setItem('accel-signs-theme', 'light')")
        driver.refresh()
        _wait(driver, "return document.body.dataset.ready === '1'")
        time.sleep(1)
        shot("runs")
        _view(driver, "eval")
        if args.run:
            Select(driver.find_element("id", "eval-run")).select_by_visible_text(args.run)
            time.sleep(1)
        driver.find_element("id", "eval-start").click()
        _wait(driver, "return document.body.dataset.evalState === 'done'")
        pair = driver.find_elements("css selector", "#pairs li[data-true]")
        if pair:
            pair[0].click()
        driver.set_window_size(1280, 1250)
        driver.execute_script("window.scrollTo(0, 0)")
        matrix = driver.find_element("id", "matrix")
        ActionChains(driver).move_to_element_with_offset(matrix, 30, -40).perform()
        time.sleep(0.5)
        shot("evaluation")
        clips = driver.find_elements("css selector", "#cell-clips li[data-clip]")
        if args.clip is not None or not clips:
            _view(driver, "inspect")
            driver.find_element("id", "clip-id").clear()
            driver.find_element("id", "clip-id").send_keys(str(args.clip or 0))
            driver.find_element("id", "clip-open").click()
        else:
            clips[0].click()
        _wait(driver, "return document.body.dataset.clip !== undefined")
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(1.5)
        driver.set_window_size(1280, 1100)
        time.sleep(0.5)
        shot("inspector")
        _view(driver, "lab")
        _wait(driver, "return Number(document.body.dataset.labDraws) >= 1")
        box = driver.find_element("css selector", "#lab-controls [data-for=rotate_deg]")
        box.clear()
        box.send_keys("30\n")
        _wait(driver, "return Number(document.body.dataset.labDraws) >= 2")
        time.sleep(1)
        shot("lab")
        _view(driver, "data")
        _wait(driver, "return document.body.dataset.data !== undefined")
        shot("data")
        driver.set_window_size(1280, 900)
        driver.find_element("id", "theme").click()
        for view, name in (("runs", "runs-dark"), ("eval", "eval-dark")):
            _view(driver, view)
            time.sleep(0.8)
            shot(name)
        driver.find_element("id", "theme").click()
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
