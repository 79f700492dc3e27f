"""Screenshots of the feeds page and the status page for the README: `serve` over the bundled
examples, headless Chromium at a phone's and a desktop's width.

    .venv/bin/python docs/screenshots/take.py [index] [status]

writes docs/screenshots/index-phone.png (390 x 844) and index-desktop.png (1280 x 900) of the feeds
page, and status-phone.png and status-desktop.png of GET /status after a few cycles over a copy of
the examples (one with a file added, one with a file quarantined, one failed: the folder gone for a
moment); both pages by default. Needs Debian's `chromium`; nothing leaves the machine (see
CHROMIUM_FLAGS in tests/test_index_page.py).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.service_helpers import Service, copy_examples, free_port, wait_for, write_config
from tests.test_index_page import CHROMIUM, CHROMIUM_FLAGS

HERE = Path(__file__).resolve().parent
SIZES = {"phone": (390, 844), "desktop": (1280, 900)}
STATUS_SIZES = {"phone": (390, 1400), "desktop": (1280, 1300)}  # taller: the chart, then the tables
TOKEN = "screenshot-token"


def shoot(root: Path, url: str, name: str, size: tuple[int, int]) -> None:
    out = HERE / name
    width, height = size
    subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={root / ('profile-' + name)}",
            f"--screenshot={out}",
            f"--window-size={width},{height}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    print(out.relative_to(ROOT))


def index_page(root: Path) -> None:
    port = free_port()
    feeds = {"base_url": f"http://127.0.0.1:{port}/feeds/", "title": "News"}
    # The bundled examples as they are (feedworker only reads a source folder).
    config = write_config(root, port=port, sources=[{"path": str(ROOT / "examples" / "inbox")}], feeds=feeds)
    with Service(config, port) as service:
        service.wait_healthy(60)
        for kind, size in SIZES.items():
            shoot(root, f"{service.base}/", f"index-{kind}.png", size)


def status_page(root: Path) -> None:
    inbox = root / "inbox"
    copy_examples(inbox)
    extra = sorted(inbox.glob("*.txt"))[-3:]  # held back, then added one run at a time
    held = root / "held"
    held.mkdir()
    for path in extra:
        path.rename(held / path.name)
    port = free_port()
    feeds = {"base_url": f"http://127.0.0.1:{port}/feeds/", "title": "News"}
    config = write_config(root, port=port, feeds=feeds, server={"token": TOKEN}, watch=False)
    with Service(config, port) as service:
        service.wait_healthy(60)

        def cycle() -> None:
            accepted = service.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"}).json()
            wait_for(
                lambda: service.get(f"/runs/{accepted['run_id']}").json()["status"] in ("ok", "failed"), 60, "a run"
            )

        for path in extra:
            (held / path.name).rename(inbox / path.name)
            cycle()
        (inbox / "draft-notes.txt").write_text("---\ntitle: [an unfinished list\n---\n", encoding="utf-8")
        cycle()
        for _ in range(3):
            cycle()
        inbox.rename(root / "away")
        cycle()
        (root / "away").rename(inbox)
        for _ in range(4):
            cycle()
        time.sleep(0.5)
        for kind, size in STATUS_SIZES.items():
            shoot(root, f"{service.base}/status", f"status-{kind}.png", size)


def main(argv: list[str]) -> int:
    if CHROMIUM is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    pages = set(argv) or {"index", "status"}
    for page, take in (("index", index_page), ("status", status_page)):
        if page in pages:
            with tempfile.TemporaryDirectory() as folder:
                take(Path(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
