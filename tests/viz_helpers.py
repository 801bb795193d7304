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


def bag_counts(bag: Path) -> dict[str, int]:
    """Chunk switches and reasoning cycles in a bag, read with the `mcap` package (not the
    report's rosbags reader): ticks whose executing chunk differs from the last one's."""
    import json

    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    switches, cycles, last = 0, 0, None
    with open(next(Path(bag).glob('*.mcap')), 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _, channel, _, msg in reader.iter_decoded_messages(
            topics=['/halo/control_state', '/halo/reasoning']
        ):
            if channel.topic == '/halo/reasoning':
                cycles += 1
                continue
            chunk = json.loads(msg.data)['chunk']
            key = None if chunk is None else (chunk['epoch'], chunk['seq'])
            if key is not None and key != last:
                switches, last = switches + 1, key
    return {'chunk-switches': switches, 'reasoning-cycles': cycles}
