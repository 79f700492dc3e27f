"""Screenshots of the feeds page for the README: `serve` over the bundled examples, headless Chromium
at a phone's and a desktop's width.

    .venv/bin/python docs/screenshots/take.py

writes docs/screenshots/index-phone.png (390 x 844) and index-desktop.png (1280 x 900). Needs
Debian's `chromium`; nothing leaves the machine (see CHROMIUM_FLAGS in tests/test_index_page.py).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.service_helpers import Service, free_port, write_config
from tests.test_index_page import CHROMIUM, CHROMIUM_FLAGS

SHOTS = {"index-phone.png": (390, 844), "index-desktop.png": (1280, 900)}


def main() -> int:
    if CHROMIUM is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        port = free_port()
        feeds = {"base_url": f"http://127.0.0.1:{port}/feeds/", "title": "News"}
        # The bundled examples as they are (feedworker only reads a source folder).
        config = write_config(root, port=port, sources=[{"path": str(ROOT / "examples" / "inbox")}], feeds=feeds)
        with Service(config, port) as service:
            service.wait_healthy(60)
            for name, (width, height) in SHOTS.items():
                out = Path(__file__).resolve().parent / name
                subprocess.run(
                    [
                        CHROMIUM,
                        *CHROMIUM_FLAGS,
                        f"--user-data-dir={root / ('profile-' + name)}",
                        f"--screenshot={out}",
                        f"--window-size={width},{height}",
                        f"{service.base}/",
                    ],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
                print(out.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
