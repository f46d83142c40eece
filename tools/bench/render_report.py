"""Screenshot an HTML report with headless Chromium, to look at it the way a person would.

Run: ``python tools/bench/render_report.py report.html -o shot.png [--width 1100] [--height 3000]``
(``apt-get install -y chromium``). Not needed in CI. Chromium runs with a fresh temporary
profile, no GPU, no sandbox, and no background network activity; the report itself is
self-contained, so nothing is fetched.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render(html: Path, png: Path, width: int = 1100, height: int = 3000, timeout: float = 120) -> None:
    """Write a full-page-height screenshot of ``html`` to ``png``."""
    exe = find_chromium()
    if exe is None:
        raise SystemExit("render_report: no chromium found (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="render-report-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--screenshot={png.resolve()}",
               html.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not png.is_file():
            sys.stderr.write(proc.stderr[-2000:])
            raise SystemExit(f"render_report: chromium failed (exit {proc.returncode})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--height", type=int, default=3000, help="viewport height in pixels")
    args = ap.parse_args(argv)
    if not args.html.is_file():
        raise SystemExit(f"render_report: {args.html}: no such file")
    render(args.html, args.output, args.width, args.height)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
