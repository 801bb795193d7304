"""Who is writing an episode folder: an exclusive flock(2) on `<episode>/.writer.lock`.

The recorder holds it from the moment its bag exists until the bag is closed; recovery takes the
same lock before it renames or deletes anything, and refuses a folder whose lock is held. The
kernel drops the lock with the last file descriptor, so a recorder killed by SIGKILL (or a power
loss) leaves a folder that recovery can take, and nothing stale to clean up by hand. flock, not
fcntl record locks: those belong to the process and vanish when any of its descriptors on the file
closes; flock belongs to the open file, so even two opens in one process exclude each other.
"""

import fcntl
import os
from pathlib import Path

LOCK_NAME = '.writer.lock'


class LiveEpisodeError(RuntimeError):
    """The episode folder is locked by a running recorder (or a recovery in progress)."""


def _holder_text(fd: int) -> str:
    text = os.pread(fd, 200, 0).decode(errors='replace').strip()
    return text or 'a process that has not written its name yet'


class EpisodeLock:
    """The lock of one episode folder, taken by `acquire` (never waits) and kept until `release`."""

    def __init__(self, bag_dir: Path, *, owner: str):
        self.bag_dir = Path(bag_dir)
        self.path = self.bag_dir / LOCK_NAME
        self._owner = owner  # 'recorder' or 'recovery': goes into the file for error messages
        self._fd = -1

    def acquire(self) -> None:
        """Take the lock, or raise `LiveEpisodeError` naming who holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            raise LiveEpisodeError(
                f'episode {self.bag_dir} is in use by {holder} (it holds {self.path}); '
                'not touching it: recover it once that process has ended'
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{self._owner} process {os.getpid()}\n'.encode(), 0)
        self._fd = fd

    def release(self, *, unlink: bool = False) -> None:
        """Drop the lock; `unlink` first removes the file (the writer's folder is final then)."""
        if self._fd < 0:
            return
        if unlink:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> 'EpisodeLock':
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(bag_dir: Path) -> str | None:
    """Who holds the folder's lock ('recorder process 1234'), or None if nobody does.

    Probes by taking the lock for an instant; a folder without a lock file is not probed.
    """
    try:
        fd = os.open(Path(bag_dir) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _holder_text(fd)
    finally:
        os.close(fd)  # also drops the probe's shared lock
