"""`halo-ros serve` in its own process, killed in the middle of a request: the client reports it,
the actor publishes nothing (stale or otherwise) while the server is gone, and the client
reconnects by itself when a server returns on the same address."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from halo_ros.engine.interface import Observation
from halo_ros.runtime.actor import Actor, ActorConfig
from halo_ros.runtime.context import ContextStore
from halo_ros.runtime.feedback import ChunkSchedule
from halo_ros.runtime.observation import PolicyDropReason
from halo_ros.runtime.seam import SeamMode
from halo_ros.transport.client import RemoteConfig, RemoteEngine, RemoteUnavailable

HW = (120, 160)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def serve(endpoint: str, log_path) -> subprocess.Popen:
    command = [sys.executable, '-m', 'halo_ros.cli', 'serve', '--bind', endpoint, '--threads', '1',
               '--image-size', str(HW[1]), str(HW[0])]  # fmt: skip
    log = open(log_path, 'ab')  # noqa: SIM115 (owned by the process)
    return subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


class Frames:
    """Observations with ever newer stamps, as the assembler would deliver them."""

    def __init__(self):
        self.stamp_ns = 0
        rng = np.random.default_rng(0)
        cams = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')
        self.images = {c: rng.integers(0, 256, (*HW, 3), dtype=np.uint8) for c in cams}

    def __call__(self, now_ns: int, after_ns: int) -> Observation:
        self.stamp_ns = max(now_ns, after_ns + 1)
        return Observation(self.stamp_ns, self.images, np.zeros(14, np.float32))


def test_server_killed_mid_request_then_back(tmp_path):
    endpoint = f'tcp://127.0.0.1:{free_port()}'
    server = serve(endpoint, tmp_path / 'serve.log')
    restarted = None
    try:
        config = RemoteConfig(
            act_timeout_s=20.0, connect_timeout_s=120.0, health_timeout_s=5.0, max_backoff_s=0.5
        )
        engine = RemoteEngine(endpoint, config)
        frames, published = Frames(), []
        actor = Actor(
            engine,
            ContextStore('transfer the cube'),
            frames,
            ChunkSchedule(20_000_000),
            config=ActorConfig(seam=SeamMode.NONE),
            on_chunk=lambda chunk, _: published.append(chunk),
        )
        first = actor.step()
        assert first is not None and first.stamp_ns == frames.stamp_ns

        # A request in flight, then SIGKILL while the server computes it.
        results = []
        thread = threading.Thread(target=lambda: results.append(actor.step()))
        thread.start()
        deadline = time.monotonic() + 30
        while engine.health()['running_act'] == 0:
            assert time.monotonic() < deadline, 'the request never started'
            time.sleep(0.01)
        kill(server)
        thread.join(60)
        assert results == [None]  # reported as a failed chunk...
        assert len(published) == 1  # ...and nothing was published
        assert actor.drops[PolicyDropReason.ENGINE_ERROR] == 1
        with pytest.raises(RemoteUnavailable):
            engine.health()
        assert actor.step() is None and len(published) == 1  # still down: still nothing

        restarted = serve(endpoint, tmp_path / 'serve2.log')
        deadline = time.monotonic() + 120
        chunk = None
        while chunk is None:
            assert time.monotonic() < deadline, (tmp_path / 'serve2.log').read_text()[-2000:]
            assert restarted.poll() is None, (tmp_path / 'serve2.log').read_text()[-2000:]
            chunk = actor.step()
            time.sleep(0.05)
        # The chunk after reconnecting is computed from the observation of that very request.
        assert chunk.stamp_ns == frames.stamp_ns and published[-1] is chunk
        assert len(published) == 2 and engine.health()['uptime_s'] < 120
        engine.close()
    finally:
        kill(server)
        if restarted is not None:
            kill(restarted)
