"""The robot computer's venv: `pip install 'halo_ros[robot]'` into a fresh `python -m venv`.

Built from a copy of the package (pip builds in the source folder, which must not be the
working tree), with pip's own download cache, the one `make install` fills. Its dependencies
take a minute or more to install, so the venv is kept under the cache folder, keyed by
setup.py and the Python version, and only halo_ros itself (pure Python, seconds) is reinstalled
on every use, so the venv always runs the code under test.

`python tests/robot_venv.py [--fresh] [--no-cache]` builds one and prints its times and size
(README and BENCHMARKS.md quote them).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXTRA = 'robot'
# What a pip install of the package needs from the tree (setup.py's packages and data_files).
PACKAGE_FILES = ('setup.py', 'setup.cfg', 'pyproject.toml', 'package.xml')
PACKAGE_DIRS = ('halo_ros', 'resource', 'launch', 'config', 'models', 'calibration')
STAMP = '.halo_ros-robot-deps'


def cache_root() -> Path:
    return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'halo_ros'


def venv_key() -> str:
    """setup.py (the extras) and the interpreter: what the installed dependencies depend on."""
    digest = hashlib.sha256((REPO / 'setup.py').read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()[:16]


def default_venv() -> Path:
    return cache_root() / f'robot-venv-{venv_key()}'


def clean_env(base: dict | None = None) -> dict:
    """The environment for a process of another venv: without the ROS wheels' bootstrap marks
    of this one (its `.pth` re-execs each interpreter with its own library path once, and skips
    that when the variable says it was done), and without anything pointing into this venv."""
    env = dict(os.environ if base is None else base)
    for name in ('_ROS_WHEELS_BOOTSTRAP_COMPLETE', 'LD_LIBRARY_PATH', 'VIRTUAL_ENV', 'PYTHONPATH',
                 'PYTHONHOME'):  # fmt: skip
        env.pop(name, None)
    bin_dir = str(Path(sys.prefix) / 'bin')
    env['PATH'] = os.pathsep.join(p for p in env.get('PATH', '').split(os.pathsep) if p != bin_dir)
    return env


def _run(command: list, env: dict, log: Path) -> float:
    start = time.monotonic()
    with open(log, 'ab') as out:
        out.write(f'$ {" ".join(map(str, command))}\n'.encode())
        out.flush()
        rc = subprocess.call(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        tail = log.read_text(errors='replace')[-4000:]
        raise RuntimeError(f'{command[:4]} failed ({rc}); {log}:\n{tail}')
    return time.monotonic() - start


def _source_copy(into: Path) -> Path:
    for name in PACKAGE_FILES:
        shutil.copy2(REPO / name, into / name)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
    for name in PACKAGE_DIRS:
        shutil.copytree(REPO / name, into / name, ignore=ignore)
    return into


def site_packages(venv: Path) -> Path:
    (path,) = (venv / 'lib').glob('python3*/site-packages')
    return path


def du_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob('*') if p.is_file() and not p.is_symlink())


def _prune(keep: Path, unused_s: float = 3600.0) -> None:
    """Remove the venvs of other setup.py versions (0.5 GB each) not used for `unused_s` (one in
    use by another checkout is younger)."""
    for old in keep.parent.glob('robot-venv-*'):
        stamp = old / STAMP
        if not old.is_dir() or old == keep:
            continue
        if time.time() - (stamp if stamp.is_file() else old).stat().st_mtime > unused_s:
            shutil.rmtree(old, ignore_errors=True)


def robot_venv(venv: Path | None = None, *, fresh: bool = False, pip_cache: bool = True) -> dict:
    """A venv with `halo_ros[robot]` and the current halo_ros; returns its paths and timings.

    Concurrent callers wait on a lock; a venv whose dependency install did not finish (no
    stamp) is rebuilt from scratch.
    """
    venv = Path(venv or default_venv())
    venv.parent.mkdir(parents=True, exist_ok=True)
    env = clean_env()
    env['PIP_DISABLE_PIP_VERSION_CHECK'] = '1'
    if not pip_cache:
        env['PIP_NO_CACHE_DIR'] = '1'
    timings: dict[str, float] = {}
    with open(venv.parent / f'{venv.name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        python = venv / 'bin' / 'python'
        log = venv.parent / f'{venv.name}.log'
        with tempfile.TemporaryDirectory(prefix='halo_ros-src-') as tmp:
            source = _source_copy(Path(tmp))
            if fresh or not (venv / STAMP).is_file():
                if venv == default_venv():
                    _prune(venv)
                shutil.rmtree(venv, ignore_errors=True)
                log.unlink(missing_ok=True)
                start = time.monotonic()
                _run([sys.executable, '-m', 'venv', venv], env, log)
                _run([python, '-m', 'pip', 'install', '-q', '--upgrade', 'pip', 'setuptools'],
                     env, log)  # fmt: skip
                _run([python, '-m', 'pip', 'install', '-q', f'{source}[{EXTRA}]'], env, log)
                timings['install_s'] = time.monotonic() - start
                (venv / STAMP).write_text(json.dumps(timings))
            else:  # the dependencies are there: only the code under test changes
                (venv / STAMP).touch()  # in use (see _prune)
                timings['reinstall_s'] = _run(
                    [python, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                     '--force-reinstall', source],
                    env, log,
                )  # fmt: skip
    return {'venv': venv, 'python': str(python), 'env': env, **timings}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--venv', type=Path, default=None, help=f'default {default_venv()}')
    parser.add_argument('--fresh', action='store_true', help='rebuild even if it exists')
    parser.add_argument('--no-cache', action='store_true', help="bypass pip's download cache")
    args = parser.parse_args()
    built = robot_venv(args.venv, fresh=args.fresh, pip_cache=not args.no_cache)
    site = site_packages(built['venv'])
    report = {
        'venv': str(built['venv']),
        **{k: round(v, 1) for k, v in built.items() if k.endswith('_s')},
        'site_packages_mb': round(du_bytes(site) / 1e6, 1),
        'venv_mb': round(du_bytes(built['venv']) / 1e6, 1),
        'platform': sysconfig.get_platform(),
        'python': sys.version.split()[0],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
