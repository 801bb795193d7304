"""The engine server and RemoteEngine on loopback: the same chunks as in process, 10,000 hostile
frames answered with errors, CURVE, the handshake check, fairness between robots."""

import threading
import time
from dataclasses import replace

import cv2
import msgpack
import numpy as np
import pytest
import torch
import zmq

from halo_ros.engine.interface import Observation
from halo_ros.engine.loading import EngineConfig, load_engine
from halo_ros.runtime.seam import SeamMode, plan_seam
from halo_ros.transport import protocol
from halo_ros.transport.bench import StubEngine
from halo_ros.transport.client import HandshakeError, RemoteConfig, RemoteEngine, RemoteUnavailable
from halo_ros.transport.security import ClientKeys, ServerKeys, make_keys
from halo_ros.transport.server import EngineServer, ServerConfig
from halo_ros.transport.wire import PROTOCOL_VERSION, WireLimits, encode_array, pack, unpack

HW = (120, 160)
LOOPBACK = 'tcp://127.0.0.1:*'
SLOW_OK = RemoteConfig(act_timeout_s=60.0, reason_timeout_s=120.0)  # a loaded 2-core box


def observation(seed: int, stamp_ns: int = 1, hw=HW) -> Observation:
    rng = np.random.default_rng(seed)
    cameras = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')
    images = {c: rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for c in cameras}
    return Observation(stamp_ns, images, rng.standard_normal(14).astype(np.float32))


@pytest.fixture(scope='module')
def engine():
    torch.set_num_threads(1)
    return load_engine(EngineConfig(image_hw=HW))


@pytest.fixture(scope='module')
def served(engine):
    server = EngineServer(engine, ServerConfig(bind=LOOPBACK)).start()
    client = RemoteEngine(server.endpoint, SLOW_OK)
    yield server, client
    client.close()
    server.stop()


def test_remote_chunks_equal_in_process_chunks(engine, served):
    _, client = served
    obs = observation(0)
    noise = np.random.default_rng(1).standard_normal((50, 14), dtype=np.float32)
    assert client.info.supports_guidance_gradients and client.info.backend == 'remote:torch'

    remote = client.act(obs, None, noise)
    np.testing.assert_array_equal(remote.actions, engine.act(obs, None, noise).actions)
    assert remote.timings_ms['server_engine'] > 0 and remote.timings_ms['round_trip'] > 0

    reasoning = client.reason(obs, 'transfer the cube', 7, max_tokens=4)
    local_reasoning = engine.reason(obs, 'transfer the cube', 7, max_tokens=4)
    assert reasoning.text == local_reasoning.text and reasoning.version == 7
    np.testing.assert_array_equal(reasoning.subgoal_tokens, local_reasoning.subgoal_tokens)
    np.testing.assert_array_equal(reasoning.subgoal_image, local_reasoning.subgoal_image)

    reference = engine.act(obs, reasoning, noise).actions
    np.testing.assert_array_equal(client.act(obs, reasoning, noise).actions, reference)
    # Seams: the plan crosses the wire as data, the server's engine follows it.
    for mode in (SeamMode.RTC, SeamMode.HARD, SeamMode.PREFIX):
        seam = plan_seam(mode, reference[12:] + 0.2, 50, 4, 6)
        local = engine.act(obs, reasoning, noise, seam).actions
        np.testing.assert_array_equal(client.act(obs, reasoning, noise, seam).actions, local)
        assert not np.array_equal(local, reference)  # the seam did steer the chunk


def test_client_resizes_and_jpeg_stays_close(engine, served):
    server, _ = served
    client = RemoteEngine(server.endpoint, RemoteConfig(act_timeout_s=60.0, jpeg_quality=95))
    try:
        y, x = np.mgrid[: 2 * HW[0], : 2 * HW[1]]
        big = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
        obs = Observation(1, dict.fromkeys(client.info.cameras, big), np.zeros(14, np.float32))
        noise = np.zeros((50, 14), np.float32)
        remote = client.act(obs, None, noise).actions  # 240x320 frames, resized on the robot
        small = cv2.resize(big, (HW[1], HW[0]), interpolation=cv2.INTER_AREA)
        local = engine.act(Observation(1, dict.fromkeys(obs.images, small), obs.state), None, noise)
        assert np.abs(remote - local.actions).max() < 0.05  # JPEG is lossy, not wrong
    finally:
        client.close()


def _valid_act(info) -> dict:
    rng = np.random.default_rng(2)
    images = {
        c: {'jpeg': cv2.imencode('.jpg', np.zeros((*HW, 3), np.uint8))[1].tobytes()}
        for c in info.cameras
    }
    body = {
        'observation': {
            'stamp_ns': 1,
            'images': images,
            'state': encode_array(np.zeros(14, np.float32)),
        },
        'reasoning': None,
        'noise': encode_array(rng.standard_normal((50, 14), dtype=np.float32)),
        'seam': None,
    }
    return protocol.request(protocol.Op.ACT, 1, 1, body)


BAD_VALUES = ['x', 1.5, [1], {'a': 1}, b'\x00', True]
PATHS = [
    ('v',), ('op',), ('id',), ('stamp_ns',), ('body',), ('body', 'observation'),
    ('body', 'noise'), ('body', 'seam'), ('body', 'observation', 'stamp_ns'),
    ('body', 'observation', 'state'), ('body', 'observation', 'images'),
    ('body', 'observation', 'images', 'cam_high'), ('body', 'noise', 'dtype'),
    ('body', 'noise', 'shape'), ('body', 'noise', 'data'),
]  # fmt: skip


def hostile_frames(info, count: int, seed: int = 0) -> list[list[bytes]]:
    """Frames that must all be refused: random bytes, truncations, wrong types, dtypes, shapes,
    versions, missing and unknown fields, ext types, bad JPEG, extra frames."""
    rng = np.random.default_rng(seed)
    template = _valid_act(info)
    valid = pack(template)
    frames = []
    for i in range(count):
        kind = i % 10
        if kind == 0:
            frames.append([rng.bytes(int(rng.integers(0, 2000)))])
        elif kind == 1:
            frames.append([valid[: int(rng.integers(0, len(valid) - 1))]])
        elif kind in (2, 3, 4):
            message = msgpack.unpackb(valid)
            path = PATHS[int(rng.integers(len(PATHS)))]
            node = message
            for key in path[:-1]:
                node = node[key]
            op = int(rng.integers(3))
            if op == 0:
                node[path[-1]] = BAD_VALUES[int(rng.integers(len(BAD_VALUES)))]
            elif op == 1:
                del node[path[-1]]
            else:
                node[f'unknown{i}'] = 1
            frames.append([msgpack.packb(message)])
        elif kind == 5:
            message = msgpack.unpackb(valid)
            wrong = [
                {'dtype': '<f8', 'shape': [50, 14], 'data': bytes(5600)},
                {'dtype': '<f4', 'shape': [14, 50, 1], 'data': bytes(2800)},
                {'dtype': '|O', 'shape': [50, 14], 'data': bytes(5600)},
                {
                    'dtype': '<f4',
                    'shape': [50, 14],
                    'data': np.full((50, 14), np.nan, np.float32).tobytes(),
                },
            ]
            message['body']['noise'] = wrong[i % len(wrong)]
            frames.append([msgpack.packb(message)])
        elif kind == 6:  # an unknown protocol version
            frames.append([pack({**template, 'v': PROTOCOL_VERSION + int(rng.integers(1, 1000))})])
        elif kind == 7:
            frames.append(
                [
                    msgpack.packb(
                        {
                            'v': PROTOCOL_VERSION,
                            'x': msgpack.ExtType(int(rng.integers(0, 127)), rng.bytes(8)),
                        }
                    )
                ]
            )
        elif kind == 8:
            message = msgpack.unpackb(valid)
            message['body']['observation']['images']['cam_left_wrist'] = {'jpeg': rng.bytes(300)}
            frames.append([msgpack.packb(message)])
        else:
            frames.append([valid, valid])  # two frames in one message
    return frames


class CountingEngine(StubEngine):
    def __init__(self, image_hw, delay_s: float = 0.0):
        super().__init__(image_hw)
        self.calls = []
        self._delay_s = delay_s

    def act(self, observation, reasoning, noise, seam=None):
        self.calls.append(observation.stamp_ns)
        time.sleep(self._delay_s)
        return super().act(observation, reasoning, noise, seam)


def test_ten_thousand_hostile_frames_are_answered_and_nothing_reaches_the_engine():
    engine = CountingEngine(HW)
    limits = WireLimits(max_message_bytes=256 << 10)
    server = EngineServer(engine, ServerConfig(bind=LOOPBACK, limits=limits)).start()
    context = zmq.Context()
    attacker = context.socket(zmq.DEALER)
    attacker.linger = 0
    attacker.connect(server.endpoint)
    try:
        frames = hostile_frames(engine.info, 10_000)
        frames += [[bytes(300 << 10)]] * 10  # over the limit, under the socket's hard cap
        codes = {}
        for start in range(0, len(frames), 200):  # pipelined, 200 in flight
            batch = frames[start : start + 200]
            for message in batch:
                attacker.send_multipart(message)
            for _ in batch:
                assert attacker.poll(10_000), 'the server stopped answering'
                reply = unpack(attacker.recv(), WireLimits())
                assert reply['ok'] is False and reply['v'] == PROTOCOL_VERSION
                codes[reply['error']['code']] = codes.get(reply['error']['code'], 0) + 1
        assert sum(codes.values()) == len(frames)
        assert set(codes) <= {'decode', 'schema', 'version', 'frames', 'too_large'}, codes
        assert {'decode', 'schema', 'version', 'frames', 'too_large'} <= set(codes)
        assert engine.calls == []
        # Far beyond the cap: libzmq drops that connection unread; the server serves on.
        attacker.send(bytes(limits.max_message_bytes + (2 << 20)))
        client = RemoteEngine(server.endpoint, RemoteConfig(act_timeout_s=10.0))
        result = client.act(observation(3, 42), None, np.ones((50, 14), np.float32))
        assert engine.calls == [42] and np.array_equal(result.actions, np.ones((50, 14)))
        assert attacker.poll(200) == 0  # the oversized frame was dropped unanswered
        assert client.health()['counts']['schema'] > 1000
        client.close()
    finally:
        attacker.close()
        context.term()
        server.stop()


def test_handshake_mismatch_is_refused():
    server = EngineServer(StubEngine(HW), ServerConfig(bind=LOOPBACK)).start()
    try:
        for wrong in (
            {'chunk_length': 49},
            {'model_hash': 'feedbeef'},
            {'control_period_s': 0.01},
            {'cameras': ('cam_high',)},
        ):
            with pytest.raises(HandshakeError):
                RemoteEngine(server.endpoint, RemoteConfig(**wrong))
        right = RemoteEngine(server.endpoint, RemoteConfig(chunk_length=50, control_period_s=0.02))
        assert right.info.chunk_length == 50 and right.control_period_ns == 20_000_000
        right.close()
    finally:
        server.stop()


def test_curve_only_admits_authorized_keys(tmp_path):
    with pytest.raises(PermissionError, match='CURVE'):
        EngineServer(StubEngine(HW), ServerConfig(bind='tcp://0.0.0.0:*'))
    _, server_secret = make_keys(tmp_path / 'server', 'server')
    make_keys(tmp_path / 'robot', 'robot')
    make_keys(tmp_path / 'intruder', 'intruder')
    keys = ServerKeys(str(server_secret), str(tmp_path / 'robot'))  # robot.key is authorized
    server = EngineServer(StubEngine(HW), ServerConfig(bind=LOOPBACK, keys=keys)).start()
    server_public = str(tmp_path / 'server' / 'server.key')
    quick = dict(connect_timeout_s=1.0, health_timeout_s=0.3)
    try:
        robot = RemoteEngine(
            server.endpoint,
            RemoteConfig(keys=ClientKeys(str(tmp_path / 'robot/robot.key_secret'), server_public)),
        )
        assert robot.act(observation(0), None, np.zeros((50, 14), np.float32)).actions.shape
        robot.close()
        admitted = dict(server.counts)
        intruder = ClientKeys(str(tmp_path / 'intruder/intruder.key_secret'), server_public)
        for config in (RemoteConfig(keys=intruder, **quick), RemoteConfig(**quick)):
            with pytest.raises(RemoteUnavailable):  # wrong key, or no CURVE: not one reply
                RemoteEngine(server.endpoint, config)
        assert server.counts == admitted  # not one frame of theirs got through
    finally:
        server.stop()


def test_a_flooding_robot_cannot_starve_another():
    engine = CountingEngine(HW, delay_s=0.02)
    server = EngineServer(engine, ServerConfig(bind=LOOPBACK)).start()
    context = zmq.Context()
    flood = context.socket(zmq.DEALER)
    flood.linger = 0
    flood.connect(server.endpoint)
    request = _valid_act(engine.info)
    request['body']['observation']['stamp_ns'] = 999
    frame = pack(request)
    polite = RemoteEngine(server.endpoint, RemoteConfig(act_timeout_s=10.0))
    try:
        stop = threading.Event()

        def flooding():
            while not stop.is_set():
                flood.send(frame)
                while flood.poll(0):
                    flood.recv()
                time.sleep(0.001)

        thread = threading.Thread(target=flooding)
        thread.start()
        latencies = []
        for k in range(8):
            start = time.perf_counter()
            polite.act(observation(k, stamp_ns=k + 1), None, np.zeros((50, 14), np.float32))
            latencies.append(time.perf_counter() - start)
        stop.set()
        thread.join()
        served_polite = [s for s in engine.calls if s != 999]
        assert served_polite == list(range(1, 9))
        # Round robin: at most one flood request runs before each polite one (20 ms each).
        assert np.median(latencies) < 0.2, latencies
        assert engine.calls.count(999) < 200  # the flood was mostly superseded, not queued
        assert server.counts['superseded'] > 0
    finally:
        polite.close()
        flood.close()
        context.term()
        server.stop()


class HeldEngine(StubEngine):
    """act() waits until the test lets it go: requests pile up in the server's queue."""

    def __init__(self, image_hw):
        super().__init__(image_hw)
        self.release = threading.Event()

    def act(self, observation, reasoning, noise, seam=None):
        assert self.release.wait(30), 'the test never released the engine'
        return super().act(observation, reasoning, noise, seam)


def test_many_identities_cannot_grow_the_queue_without_bound():
    """One host, many DEALER sockets (one identity each): the server queues at most
    max_pending_jobs of their requests and answers the rest 'busy' at once."""
    engine = HeldEngine(HW)
    config = ServerConfig(bind=LOOPBACK, max_pending_jobs=4)
    server = EngineServer(engine, config).start()
    context = zmq.Context()
    sockets = []
    try:
        frame = pack(_valid_act(engine.info))
        for _ in range(30):
            dealer = context.socket(zmq.DEALER)
            dealer.linger = 0
            dealer.connect(server.endpoint)
            dealer.send(frame)
            sockets.append(dealer)
        busy = []
        deadline = time.monotonic() + 30
        while len(busy) < 25 and time.monotonic() < deadline:
            for dealer in sockets:
                if dealer.poll(0):
                    busy.append(unpack(dealer.recv(), WireLimits()))
            time.sleep(0.01)
        # one request runs (held), four wait: every other identity was told at once
        assert len(busy) == 25, len(busy)
        assert all(r['ok'] is False and r['error']['code'] == 'busy' for r in busy)
        assert server.health()['queued_act'] == 4
        engine.release.set()
    finally:
        engine.release.set()
        for dealer in sockets:
            dealer.close()
        context.term()
        server.stop()


def test_a_state_vector_has_a_size_limit():
    engine = StubEngine(HW)
    request = _valid_act(engine.info)
    request['body']['observation']['state'] = encode_array(np.zeros(1 << 20, np.float32))
    body = unpack(pack(request), WireLimits())['body']  # as the server receives it
    with pytest.raises(protocol.ProtocolError, match='observation.state: 1048576 values'):
        protocol.parse_act(body, engine.info)


def test_the_client_sends_no_plaintext_beyond_loopback_unless_told(tmp_path):
    with pytest.raises(PermissionError, match='plaintext'):
        RemoteEngine('tcp://192.0.2.1:5555', RemoteConfig())  # refused before connecting
    from halo_ros.transport.security import check_connect

    check_connect('tcp://192.0.2.1:5555', None, insecure=True)  # explicitly accepted
    check_connect('tcp://127.0.0.1:5555', None)
    _, secret = make_keys(tmp_path, 'robot')
    keys = ClientKeys(str(secret), str(tmp_path / 'robot.key'))
    check_connect('tcp://192.0.2.1:5555', keys)


def test_secret_keys_are_private_from_their_creation(tmp_path, monkeypatch):
    import os
    import pathlib

    from halo_ros.transport.security import load_secret

    def no_chmod(*args, **kwargs):
        raise AssertionError('the secret key was created readable and narrowed afterwards')

    monkeypatch.setattr(os, 'chmod', no_chmod)
    monkeypatch.setattr(pathlib.Path, 'chmod', no_chmod)
    old = os.umask(0)  # a permissive umask must not matter
    try:
        public, secret = make_keys(tmp_path, 'server')
    finally:
        os.umask(old)
    monkeypatch.undo()
    assert secret.stat().st_mode & 0o777 == 0o600
    assert load_secret(secret)[0] == zmq.auth.load_certificate(str(public))[0]
    secret.chmod(0o644)
    with pytest.raises(PermissionError, match='readable by other users'):
        load_secret(secret)


class OtherModel(StubEngine):
    def __init__(self, image_hw):
        super().__init__(image_hw)
        self._info = replace(self._info, model_hash='f' * 16)


def test_a_server_that_comes_back_with_another_model_is_refused():
    first = EngineServer(StubEngine(HW), ServerConfig(bind=LOOPBACK)).start()
    endpoint = first.endpoint
    client = RemoteEngine(endpoint, RemoteConfig(act_timeout_s=1.0, max_backoff_s=0.2))
    obs, noise = observation(0), np.zeros((50, 14), np.float32)
    client.act(obs, None, noise)
    first.stop()
    second = EngineServer(OtherModel(HW), ServerConfig(bind=endpoint)).start()
    try:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, 'the changed server was never noticed'
            try:
                client.act(obs, None, noise)
            except RemoteUnavailable:  # the old connection's timeout, or backing off
                time.sleep(0.05)
                continue
            except HandshakeError as error:
                assert 'changed' in str(error)
                break
            raise AssertionError('acted on a server with another model')
        with pytest.raises(RemoteUnavailable, match='backing off'):
            client.act(obs, None, noise)  # refused connections back off too
    finally:
        client.close()
        second.stop()


def test_load_engine_backend_remote_returns_the_client():
    server = EngineServer(StubEngine(HW), ServerConfig(bind=LOOPBACK)).start()
    try:
        engine = load_engine(EngineConfig(backend='remote', server=server.endpoint, image_hw=HW))
        assert isinstance(engine, RemoteEngine) and engine.info.backend == 'remote:stub'
        engine.close()
        with pytest.raises(HandshakeError, match='chunk length'):
            load_engine(EngineConfig(backend='remote', server=server.endpoint, chunk_length=30))
    finally:
        server.stop()
