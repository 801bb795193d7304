"""Where the package's data lives: a source checkout, a pip install and a colcon install alike."""

import sys
from functools import cache
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


@cache
def share_dir() -> Path:
    """The folder holding config/, models/, calibration/ and launch/.

    A source or editable checkout uses the repository itself; an installed package uses
    `<prefix>/share/halo_ros` (setup.py's data_files), which is where colcon puts it too.
    """
    if (_SOURCE_ROOT / 'package.xml').is_file():
        return _SOURCE_ROOT
    for prefix in (Path(sys.prefix), *(Path(p).parent.parent.parent for p in sys.path if p)):
        candidate = prefix / 'share' / 'halo_ros'
        if (candidate / 'package.xml').is_file():
            return candidate
    raise FileNotFoundError(
        'halo_ros data files not found: expected package.xml beside the package source or under '
        f'{sys.prefix}/share/halo_ros. Reinstall with `make install` or `colcon build`.'
    )


def config_file(name: str) -> Path:
    return share_dir() / 'config' / name


def calibration_file(name: str) -> Path:
    return share_dir() / 'calibration' / name


def model_file(name: str) -> Path:
    return share_dir() / 'models' / name
