"""Benchmark the remote-inference transport: overhead beyond engine time on this host.

The server runs in its own process (as in deployment) around a stub engine that answers at once,
so everything measured is transport: client resize/JPEG + msgpack, ZeroMQ over loopback TCP,
server decode + validation (+ JPEG decode), reply and client decode. Overhead per chunk = the
client's `act` wall time minus the server's engine time.
"""

from __future__ import annotations

import logging
import multiprocessing
import time

import numpy as np

from halo_ros.engine.interface import ActionResult, Engine, EngineInfo, Observation

log = logging.getLogger(__name__)

CAMERAS = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')


class StubEngine(Engine):
    """Answers `act` with the noise itself: engine time ~0, so the rest is transport."""

    def __init__(self, image_hw: tuple[int, int], chunk_length: int = 50, action_dim: int = 14):
        self._info = EngineInfo(
            'stub', 'stub', '0' * 16, action_dim, chunk_length, 1, CAMERAS, tuple(image_hw), False
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    def act(self, observation, reasoning, noise, seam=None) -> ActionResult:
        return ActionResult(noise.copy(), {'total': 0.0})

    def reason(self, observation, instruction, version, *, subgoal=True, max_tokens=64):
        raise NotImplementedError('the transport benchmark stub does not reason')


def _serve(image_hw, endpoint_queue, stop_event) -> None:
    from halo_ros.transport.server import EngineServer, ServerConfig

    server = EngineServer(StubEngine(image_hw), ServerConfig(bind='tcp://127.0.0.1:*')).start()
    endpoint_queue.put(server.endpoint)
    stop_event.wait()
    server.stop()


def measure(camera_hw, server_hw, jpeg_quality: int, requests: int, warmup: int = 10) -> dict:
    """One case: frames of camera_hw, a server taking server_hw, raw or JPEG."""
    from halo_ros.transport.client import RemoteConfig, RemoteEngine
    from halo_ros.transport.images import encode_frame

    ctx = multiprocessing.get_context('spawn')
    queue, stop = ctx.Queue(), ctx.Event()
    process = ctx.Process(target=_serve, args=(tuple(server_hw), queue, stop), daemon=True)
    process.start()
    try:
        client = RemoteEngine(queue.get(timeout=60), RemoteConfig(jpeg_quality=jpeg_quality))
        rng = np.random.default_rng(0)
        # Smooth frames (JPEG size like a camera's, not like noise): a gradient plus mild noise.
        y, x = np.mgrid[: camera_hw[0], : camera_hw[1]]
        base = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.int16)
        frames = {
            c: np.clip(base + rng.integers(-8, 8, base.shape), 0, 255).astype(np.uint8)
            for c in CAMERAS
        }
        observation = Observation(0, frames, np.zeros(14, np.float32))
        noise = rng.standard_normal((50, 14), dtype=np.float32)
        overhead, encode, network = [], [], []
        for i in range(warmup + requests):
            start = time.perf_counter()
            result = client.act(observation, None, noise)
            total_ms = (time.perf_counter() - start) * 1e3
            if i >= warmup:
                overhead.append(total_ms - result.timings_ms['server_engine'])
                encode.append(result.timings_ms['encode'])
                network.append(result.timings_ms['network'])
        client.close()
    finally:
        stop.set()
        process.join(10)
    frame = next(iter(frames.values()))
    from halo_ros.transport.images import fit

    wire_kb = (
        sum(
            len(v['jpeg']) if 'jpeg' in v else len(v['data'])
            for v in (encode_frame(fit(frame, server_hw), jpeg_quality) for _ in CAMERAS)
        )
        / 1024
    )
    o = np.array(overhead)
    return {
        'case': f'3 x {camera_hw[0]}x{camera_hw[1]}'
        + (f' -> {server_hw[0]}x{server_hw[1]}' if tuple(camera_hw) != tuple(server_hw) else '')
        + (f' jpeg q{jpeg_quality}' if jpeg_quality else ' raw'),
        'frames_kb': round(wire_kb, 1),
        'overhead_p50_ms': float(np.percentile(o, 50)),
        'overhead_p95_ms': float(np.percentile(o, 95)),
        'overhead_max_ms': float(o.max()),
        'client_encode_p50_ms': float(np.median(encode)),
        'wire_and_decode_p50_ms': float(np.median(network)),
        'requests': requests,
    }


def add_arguments(parser) -> None:
    parser.add_argument('--requests', type=int, default=200, help='per case')
    parser.add_argument('--jpeg-quality', type=int, default=90)
    parser.add_argument('--json', default=None)


def run(args) -> int:
    from halo_ros.benchmarks import report

    cases = [
        ((224, 224), (224, 224), 0),
        ((480, 640), (480, 640), 0),
        ((480, 640), (480, 640), args.jpeg_quality),
        ((480, 640), (224, 224), 0),
    ]
    rows = [measure(cam, srv, q, args.requests) for cam, srv, q in cases]
    report(
        'transport overhead (loopback, stub engine in a server process)',
        rows,
        args.json,
        target_ms={'3 x 224x224 raw p50': 2.0},
    )
    return 0
