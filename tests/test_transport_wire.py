"""The transport's pure parts: wire encoding under limits, schema, JPEG header, fairness,
security checks, and that the robot side never needs torch or pickle."""

import pathlib
import re
import subprocess
import sys

import msgpack
import numpy as np
import pytest

from halo_ros.transport import protocol
from halo_ros.transport.fair_queue import FairQueue
from halo_ros.transport.images import decode_frame, encode_frame, jpeg_size
from halo_ros.transport.security import check_bind, is_loopback
from halo_ros.transport.wire import (
    PROTOCOL_VERSION,
    ProtocolError,
    WireLimits,
    decode_array,
    encode_array,
    pack,
    unpack,
)

LIMITS = WireLimits(max_message_bytes=1 << 20)
TRANSPORT = pathlib.Path(protocol.__file__).parent


def roundtrip(value):
    return unpack(pack({'x': value}), LIMITS)['x']


@pytest.mark.parametrize(
    'array', [np.arange(12, dtype=np.float32).reshape(3, 4), np.zeros((2, 3, 3), np.uint8)]
)
def test_arrays_roundtrip_exactly(array):
    back = decode_array('x', roundtrip(array), array.shape, array.dtype)
    assert back.dtype == array.dtype and np.array_equal(back, array)
    back[0] = 1  # owned and writable, not a view of the frame
    wire = roundtrip(array.astype('>f4') if array.dtype == np.float32 else array)
    assert np.array_equal(decode_array('x', wire, array.shape, array.dtype), array)


@pytest.mark.parametrize('dtype', [np.float64, np.int64, object, np.complex64])
def test_only_wire_dtypes_can_be_sent(dtype):
    with pytest.raises(TypeError, match='cannot go on the wire'):
        encode_array(np.zeros(3, dtype=dtype))


BAD_ARRAYS = [
    ('not a map', [1, 2, 3], 'array map'),
    ('extra key', {'dtype': '<f4', 'shape': [2], 'data': bytes(8), 'x': 1}, 'array map'),
    ('float64', {'dtype': '<f8', 'shape': [2], 'data': bytes(16)}, 'dtype'),
    ('object dtype', {'dtype': '|O', 'shape': [2], 'data': bytes(16)}, 'dtype'),
    ('wrong shape', {'dtype': '<f4', 'shape': [3], 'data': bytes(12)}, 'shape'),
    ('negative dim', {'dtype': '<f4', 'shape': [-2], 'data': b''}, 'shape'),
    ('bool dim', {'dtype': '<f4', 'shape': [True], 'data': bytes(4)}, 'shape'),
    ('short data', {'dtype': '<f4', 'shape': [2], 'data': bytes(7)}, 'bytes'),
    ('str data', {'dtype': '<f4', 'shape': [2], 'data': 'abcdefgh'}, 'bytes'),
    ('nan', encode_array(np.array([0, np.nan], np.float32)), 'NaN'),
]


@pytest.mark.parametrize('case, value, match', BAD_ARRAYS, ids=[c[0] for c in BAD_ARRAYS])
def test_bad_arrays_are_schema_errors(case, value, match):
    with pytest.raises(ProtocolError, match=match) as error:
        decode_array('noise', roundtrip(value), (2,), np.float32)
    assert error.value.code == 'schema' and 'noise' in str(error.value)


def test_unpack_refuses_ext_types_oversize_and_non_maps():
    ext = msgpack.packb({'x': msgpack.ExtType(1, b'\x80\x04K\x01.')})  # a pickle inside an ext
    empty_ext = msgpack.packb({'x': msgpack.ExtType(1, b'')})
    for frame in (ext, empty_ext):
        with pytest.raises(ProtocolError, match='ext') as error:
            unpack(frame, LIMITS)
        assert error.value.code == 'decode'
    with pytest.raises(ProtocolError) as error:
        unpack(bytes(LIMITS.max_message_bytes + 1), LIMITS)
    assert error.value.code == 'too_large'
    huge_list = msgpack.packb({'x': list(range(LIMITS.max_items + 1))})
    with pytest.raises(ProtocolError, match='not a msgpack frame'):
        unpack(huge_list, LIMITS)
    with pytest.raises(ProtocolError, match='must be a map'):
        unpack(msgpack.packb([1, 2]), LIMITS)
    with pytest.raises(ProtocolError, match='not a msgpack frame'):
        unpack(pack({'x': 1})[:-1], LIMITS)  # truncated


def test_request_envelope_checks_version_first_then_fields():
    good = protocol.request(protocol.Op.HEALTH, 3, 5, {})
    assert protocol.parse_request(good)[:3] == (protocol.Op.HEALTH, 3, 5)
    for bad, code in [
        ({**good, 'v': PROTOCOL_VERSION + 1}, 'version'),
        ({**good, 'op': 'exec'}, 'schema'),
        ({**good, 'id': -1}, 'schema'),
        ({**good, 'id': True}, 'schema'),
        ({**good, 'extra': 1}, 'schema'),
        ({**good, 'body': [1]}, 'schema'),
    ]:
        with pytest.raises(ProtocolError) as error:
            protocol.parse_request(bad)
        assert error.value.code == code, bad


def test_reasoning_crosses_the_wire_with_every_part_of_the_thought():
    from halo_ros.engine.interface import Reasoning

    reasoning = Reasoning(
        version=4,
        instruction='transfer the cube',
        text='<|plan|>reach<|subtask|>reach<|object|>cube at 41,63<|movement|>[LEFT]: stay',
        plan='reach',
        subtask='reach',
        movement='[LEFT]: stay',
        object='cube at 41,63',
        observation_stamp_ns=9,
    )
    body = roundtrip(protocol.reasoning_body(reasoning, image=False))
    assert protocol.parse_reasoning(body, image=False) == reasoning
    del body['object']
    with pytest.raises(ProtocolError, match='object'):
        protocol.parse_reasoning(body, image=False)


def test_jpeg_header_is_read_before_decoding():
    y, x = np.mgrid[:48, :64]
    frame = np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)  # smooth, like a camera
    wire = encode_frame(frame, jpeg_quality=95)
    assert jpeg_size(wire['jpeg']) == (48, 64)
    decoded = decode_frame('cam', roundtrip(wire), (48, 64))
    assert decoded.shape == (48, 64, 3) and np.abs(decoded.astype(int) - frame).mean() < 3
    with pytest.raises(ProtocolError, match='header says'):
        decode_frame('cam', wire, (480, 640))
    with pytest.raises(ProtocolError, match='header says None'):
        decode_frame('cam', {'jpeg': b'\xff\xd8' + bytes(100)}, (48, 64))
    # Colour order survives (RGB in, RGB out): a pure red frame stays red.
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    assert decode_frame('cam', encode_frame(red, 95), (16, 16))[..., 0].min() > 240


def test_fair_queue_round_robin_and_one_queued_per_client():
    q = FairQueue()
    assert q.put(b'a', 1) is None
    assert q.put(b'a', 2) == 1  # replaced: the newest observation wins
    q.put(b'b', 3)
    q.put(b'c', 4)
    assert q.get(0.1) == (b'a', 2)
    q.put(b'a', 5)  # a is running: its next job waits, b and c go first
    assert q.get(0.1) == (b'b', 3)
    assert q.get(0.1) == (b'c', 4)
    assert q.get(0.05) is None  # a still running
    q.done(b'a')
    assert q.get(0.1) == (b'a', 5)


@pytest.mark.parametrize(
    'endpoint, loopback',
    [
        ('tcp://127.0.0.1:5555', True),
        ('tcp://127.0.0.2:*', True),
        ('tcp://localhost:5555', True),
        ('tcp://[::1]:5555', True),
        ('ipc:///tmp/halo', True),
        ('tcp://0.0.0.0:5555', False),
        ('tcp://*:5555', False),
        ('tcp://192.168.1.10:5555', False),
        ('tcp://eth0:5555', False),
    ],
)
def test_loopback_detection(endpoint, loopback):
    assert is_loopback(endpoint) is loopback
    if not loopback:
        with pytest.raises(PermissionError, match='CURVE'):
            check_bind(endpoint, None)


def test_no_pickle_anywhere_in_the_transport():
    for path in TRANSPORT.glob('*.py'):
        source = path.read_text()
        for pattern in (r'import (c?pickle|marshal|dill)', r'pickle\.', r'_pyobj', r'\beval\('):
            assert not re.search(pattern, source), f'{path.name} matches {pattern}'


def test_robot_side_imports_no_torch():
    code = "import sys, halo_ros.transport.client; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False', out.stderr


def test_serve_refuses_an_open_bind_without_keys_before_loading_a_model(tmp_path):
    from halo_ros import cli

    assert cli.main(['serve', '--bind', 'tcp://0.0.0.0:5555']) == 2
    assert cli.main(['serve', '--backend', 'remote']) == 2
    assert cli.main(['keys', str(tmp_path), '--name', 'robot']) == 0
    assert (tmp_path / 'robot.key').is_file() and (
        tmp_path / 'robot.key_secret'
    ).stat().st_mode & 0o077 == 0
    assert cli.main(['keys', str(tmp_path), '--name', 'robot']) == 1  # never overwrites a key


def test_handshake_refuses_raw_frames_that_cannot_fit_a_message():
    from halo_ros.engine.interface import EngineInfo
    from halo_ros.transport.client import HandshakeError, RemoteConfig, check_handshake

    info = EngineInfo('torch', 'm', 'h', 14, 50, 9, ('a', 'b', 'c'), (480, 640), True)
    handshake = protocol.Handshake(info, 20_000_000, 2 << 20)  # 3 x 480x640 raw is 2.7 MB
    with pytest.raises(HandshakeError, match='use JPEG'):
        check_handshake(handshake, RemoteConfig())
    check_handshake(handshake, RemoteConfig(jpeg_quality=90))
