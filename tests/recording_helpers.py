"""Helpers for recording tests: a real writer process to kill, and reading bags independently."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# A recorder in its own process: joint states + a 20 kB image every 4 ms, flushed every 0.1 s;
# prints the index of every tenth message it has put.
_WRITER_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from rosbags.typesys import Stores, get_typestore
    from halo_ros.recording.episode_meta import EpisodeMeta
    from halo_ros.recording.episode_writer import EpisodeWriter, WriterConfig
    ts = get_typestore(Stores.ROS2_JAZZY)
    Header, Time = ts.types['std_msgs/msg/Header'], ts.types['builtin_interfaces/msg/Time']
    JS = ts.types['sensor_msgs/msg/JointState']
    w = EpisodeWriter(sys.argv[1], EpisodeMeta('killed', instruction='survive'),
                      config=WriterConfig(flush_period_s=0.1))
    w.start()
    k = 0
    while True:
        msg = JS(header=Header(stamp=Time(sec=k, nanosec=0), frame_id=''), name=['j'],
                 position=np.array([float(k)]), velocity=np.zeros(1), effort=np.zeros(1))
        w.put('joint_states', 'sensor_msgs/msg/JointState', 10**9 + k, ts.serialize_cdr(
            msg, 'sensor_msgs/msg/JointState'))
        w.put('cam/image_raw', 'sensor_msgs/msg/Image', 10**9 + k, bytes(20000))
        if k % 10 == 0:
            print(k, flush=True)
        k += 1
        time.sleep(0.004)
""")


def start_writer_process(bag: Path) -> subprocess.Popen:
    """A real EpisodeWriter recording into `bag` in a child process, until it is killed."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, '-c', _WRITER_CHILD, str(bag)], env=env, stdout=subprocess.PIPE, text=True
    )


def wait_for_puts(child: subprocess.Popen, count: int, timeout_s: float = 30.0):
    """(index, monotonic time) of each progress line until the child has put `count` messages."""
    put_at: list[tuple[int, float]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        assert line, 'writer child exited early'
        put_at.append((int(line), time.monotonic()))
        if put_at[-1][0] >= count:
            return put_at
    raise AssertionError(f'writer child did not put {count} messages within {timeout_s} s')


def string_cdr(text: str) -> bytes:
    """A std_msgs/String as the recorder receives it: CDR bytes."""
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    return bytes(
        ts.serialize_cdr(ts.types['std_msgs/msg/String'](data=text), 'std_msgs/msg/String')
    )


def streamed_messages(path: Path) -> list:
    """Message records of an MCAP file read front to back by the `mcap` package's stream reader,
    up to where the file ends or a record is cut off."""
    from mcap.exceptions import EndOfFile
    from mcap.records import Message
    from mcap.stream_reader import StreamReader

    found = []
    with open(path, 'rb') as f:
        try:
            for record in StreamReader(f).records:
                if isinstance(record, Message):
                    found.append(record)
        except EndOfFile:
            pass
    return found
