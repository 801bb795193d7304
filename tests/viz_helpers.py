"""Helpers for the viz tests: headless Chromium screenshots and reading a report's counts."""

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
# Headless, as root, offline: no sandbox (root), no GPU, no network side channels, no first-run UI.
CHROMIUM_FLAGS = (
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--hide-scrollbars',
)


def chromium_available() -> bool:
    return Path(CHROMIUM).is_file()


def screenshot(url: str, png: Path, *, width: int = 1280, height: int = 2400, timeout_s=120):
    """Render `url` in headless Chromium (a fresh profile) into `png`; returns the process."""
    with tempfile.TemporaryDirectory(prefix='halo-chromium-') as profile:
        return subprocess.run(
            [
                CHROMIUM,
                *CHROMIUM_FLAGS,
                f'--user-data-dir={profile}',
                f'--window-size={width},{height}',
                f'--screenshot={png}',
                url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )


def sections(html: str) -> dict[str, dict[str, str]]:
    """section id -> its data-* attributes."""
    out = {}
    for attrs in re.findall(r'<section ([^>]*)>', html):
        pairs = dict(re.findall(r'([\w-]+)="([^"]*)"', attrs))
        section_id = pairs.pop('id')
        out[section_id] = {k.removeprefix('data-'): v for k, v in pairs.items()}
    return out
