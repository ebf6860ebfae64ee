"""The dashboard at KArSL's size: a 502-class checkpoint evaluated on >= 5,000 test clips.

Starts `accel-signs dashboard RUNS_DIR` as a user does, evaluates RUN on the test split once
through the API (the uncached time), then in headless Chromium (Debian's chromium +
chromedriver, as the tests use) opens the Evaluation view and measures:

- the time from the click on "Run evaluation" (now cached) to the first drawn confusion matrix;
- the page's memory: CDP Performance.getMetrics (JSHeapUsedSize, JSHeapTotalSize) and
  performance.memory, after the matrix is drawn;
- the server's memory: VmRSS and VmHWM of its process, idle and after the evaluation;
- hovers over the matrix: for each of N pointer moves, the time the page took to answer
  (the handler) and to the next frame after it (requestAnimationFrame): within one frame
  means under 16.7 ms.

Make the data with e.g. (1 epoch of t_2_1 is enough: the numbers measured do not depend on
the accuracy):

    accel-signs synth store --classes 502 --signers 11 --reps 1        # 5,522 train + 5,522 test clips
    accel-signs train --data store --output-dir runs --run-name k502 --model-size t_2_1 \\
        --batch-size 64 --num-workers 0 --num-epochs 1 --val-signers 11 --no-eval

(one clip per sign and signer leaves none for a random validation split: signer 11 validates, and
the evaluation names every signer, as `evaluate --signers` would)
    python benchmarks/dashboard_scale.py runs k502 --signers 01,02,03,04,05,06,07,08,09,10,11
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import free_port, headless_chromium  # noqa: E402


def _get(url: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def _memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _wait(driver, script: str, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(script)


def page_figures(url: str, hovers: int, signers: str | None) -> dict[str, object]:
    from selenium.webdriver.common.action_chains import ActionChains

    driver = headless_chromium("--window-size=1280,1100", "--enable-precise-memory-info", skip_if_missing=False)
    try:
        driver.get(url + "#eval")
        _wait(driver, "return document.body.dataset.ready === '1'", 60)
        if signers:
            driver.find_element("id", "eval-signers").send_keys(signers)
        started = time.perf_counter()
        driver.find_element("id", "eval-start").click()
        # matrix draws: the Matrix marks each drawn frame on the canvas.
        _wait(driver, "return Number(document.getElementById('matrix').dataset.draws || 0) >= 1", 300)
        click_to_matrix = time.perf_counter() - started
        _wait(driver, "return document.body.dataset.evalState === 'done'", 60)
        n = int(driver.execute_script("return document.body.dataset.matrix"))
        page_ms = {k: int(driver.execute_script(f"return document.body.dataset.{k}")) for k in ("evalMs", "matrixMs")}
        driver.execute_cdp_cmd("Performance.enable", {})
        metrics = {m["name"]: m["value"] for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
        heap = driver.execute_script(
            "return performance.memory ? [performance.memory.usedJSHeapSize, performance.memory.totalJSHeapSize] : null"
        )
        matrix = driver.find_element("id", "matrix")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", matrix)
        size = matrix.size["width"]
        # Hovers: per move, the time from the event's dispatch (window, capture) to after the
        # matrix's own handler (window, bubble), and to the next frame after it.
        driver.execute_script(
            """window.__hovers = [];
               window.addEventListener('mousemove', () => { window.__t0 = performance.now(); }, true);
               window.addEventListener('mousemove', (e) => {
                 if (e.target.id !== 'matrix') return;
                 const t0 = window.__t0, handled = performance.now() - t0;
                 requestAnimationFrame(() => window.__hovers.push([handled, performance.now() - t0]));
               });"""
        )
        chain = ActionChains(driver, duration=20)
        for i in range(hovers):
            x = int((i * 37) % (size - 8) - size / 2 + 4)
            y = int((i * 53) % (size - 8) - size / 2 + 4)
            chain.move_to_element_with_offset(matrix, x, y)
        chain.perform()
        time.sleep(0.5)
        samples = driver.execute_script("return window.__hovers")
        tip = driver.execute_script("return document.getElementById('matrix-tip').textContent")
    finally:
        driver.quit()
    handled = [s[0] for s in samples]
    frame = [s[1] for s in samples]
    return {
        "classes": n,
        "click_to_first_matrix_s": round(click_to_matrix, 3),
        "page_eval_ms": page_ms["evalMs"],
        "page_result_to_matrix_ms": page_ms["matrixMs"],
        "js_heap_used_mib": round(metrics.get("JSHeapUsedSize", 0) / 2**20, 1),
        "js_heap_total_mib": round(metrics.get("JSHeapTotalSize", 0) / 2**20, 1),
        "performance_memory_used_mib": round(heap[0] / 2**20, 1) if heap else None,
        "hovers": len(samples),
        "hover_handler_ms_median": round(statistics.median(handled), 3) if handled else None,
        "hover_handler_ms_max": round(max(handled), 3) if handled else None,
        "hover_to_next_frame_ms_median": round(statistics.median(frame), 2) if frame else None,
        "hover_to_next_frame_ms_max": round(max(frame), 2) if frame else None,
        "hovers_within_one_frame": sum(f <= 1000 / 60 + 1 for f in frame),
        "last_tip": tip,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("run")
    parser.add_argument("--hovers", type=int, default=200)
    parser.add_argument(
        "--signers", help="as evaluate's --signers, e.g. 01,02 (default: the checkpoint's test signers)"
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder")
    args = parser.parse_args()
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="dashboard-cache-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "accel_signs",
            "dashboard",
            str(args.runs_dir),
            "--port",
            str(port),
            "--cache-dir",
            str(cache),
        ],
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get(url + "api/runs")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the dashboard did not start") from None
                time.sleep(0.3)
        idle = _memory(proc.pid)
        started = time.perf_counter()
        job = _get(url + "api/evaluate", {"run": args.run, "split": "test", "signers": args.signers})
        while job["state"] == "running":
            time.sleep(0.5)
            job = _get(url + f"api/evaluate/{job['key']}")
        if job["state"] != "done":
            raise SystemExit(f"the evaluation failed: {job['message']}")
        uncached = time.perf_counter() - started
        result = _get(url + f"api/evaluate/{job['key']}/result")
        after_eval = _memory(proc.pid)
        figures = {
            "test_clips": result["metrics"]["num_samples"],
            "classes": result["metrics"]["num_classes"],
            "top1": result["metrics"]["top1"],
            "evaluation_uncached_s": round(uncached, 1),
            "server_rss_idle_mib": round(idle["VmRSS"], 1),
            "server_rss_after_eval_mib": round(after_eval["VmRSS"], 1),
            "server_peak_rss_mib": round(after_eval["VmHWM"], 1),
        }
        figures |= page_figures(url, args.hovers, args.signers)
        figures["server_rss_after_page_mib"] = round(_memory(proc.pid)["VmRSS"], 1)
    finally:
        proc.terminate()
        proc.wait(30)
        if args.cache_dir is None:
            shutil.rmtree(cache, ignore_errors=True)
    for key, value in figures.items():
        print(f"{key:32s} {value}")


if __name__ == "__main__":
    main()
