"""Take the README's screenshot of the live page: `accel-signs serve CHECKPOINT` and headless
Chromium whose fake camera plays tests/data/signer_video.mp4 (Debian's chromium and
chromium-driver, and selenium from the dev extra).

    python docs/screenshot.py runs/<run>/best docs/live.png [--theme dark] [--draw pose,hands]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import free_port, headless_chromium, write_y4m  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("out", type=Path)
    parser.add_argument("--theme", choices=("light", "dark"), default="light")
    parser.add_argument("--seconds", type=float, default=12.0, help="Signing shown before the picture.")
    parser.add_argument("--draw", default="face,pose,hands", help="The parts the page draws (its drawing controls).")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "accel_signs", "-q", "serve", args.checkpoint, "--port", str(port)]
    )
    with tempfile.TemporaryDirectory() as tmp:
        camera = write_y4m(ROOT / "tests" / "data" / "signer_video.mp4", Path(tmp) / "camera.y4m")
        driver = headless_chromium(
            "--window-size=1280,860",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}",
            skip_if_missing=False,
        )
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            driver.get(f"http://127.0.0.1:{port}/")
            driver.execute_script(f"localStorage.setItem('accel_signs.theme', '{args.theme}')")
            parts = {part: part in args.draw.split(",") for part in ("face", "pose", "hands")}
            driver.execute_script("localStorage.setItem('accel_signs.drawing', arguments[0])", json.dumps(parts))
            driver.get(f"http://127.0.0.1:{port}/")
            for _ in range(600):  # the page has the model, and MediaPipe where it runs it
                if driver.execute_script("return document.body.dataset.ready === '1'"):
                    break
                time.sleep(0.2)
            driver.find_element("id", "start").click()
            time.sleep(args.seconds)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
            server.terminate()
            server.wait(30)
    print(args.out)


if __name__ == "__main__":
    main()
