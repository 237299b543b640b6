"""Headless Chromium (Debian's package) for tests that look at pages as a person would."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# Flags that keep Chromium off the network and quiet in a sandboxless container.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        raise RuntimeError("chromium is not installed: run `make browser` (scripts/check-chromium)")
    return found


def run(url: str, *extra: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        completed = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    return completed.stdout


def body_attributes(url: str) -> dict[str, str]:
    """The <body> attributes after the page's scripts ran (the DOM, not the source)."""
    dom = run(url, "--virtual-time-budget=10000", "--dump-dom")
    match = re.search(r"<body([^>]*)>", dom)
    if match is None:
        raise AssertionError("no <body> in the rendered page")
    return dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))


def screenshot(url: str, target: Path, width: int = 1280, height: int = 1600) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    run(url, f"--window-size={width},{height}", f"--screenshot={target}")
    return target
