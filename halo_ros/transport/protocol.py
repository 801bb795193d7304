"""The messages: one msgpack map per ZeroMQ frame, validated field by field on arrival.

Request  {v, op, id, stamp_ns, body}
Reply    {v, op, id, ok, body | error: {code, message}, server: {recv_ns, send_ns, decode_ms,
          queue_ms, engine_ms}}

`id` is the client's request counter (replies to a timed-out request are recognised and dropped),
`stamp_ns` its wall clock at sending. Bodies per op are below; unknown keys are refused so a
misspelt field fails loudly instead of being ignored. The seam travels as the runtime's plan (the
old chunk's tail, per-index weights, the executed prefix length, the guidance clip, the mode) and
the server's engine builds its own conditioning from it: a differentiable velocity function
cannot cross the network once per flow step.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from halo_ros.engine.interface import EngineInfo, Observation, Reasoning
from halo_ros.runtime.seam import SeamMode, SeamPlan
from halo_ros.transport.images import decode_frame
from halo_ros.transport.wire import PROTOCOL_VERSION, ProtocolError, decode_array, encode_array


class Op(enum.Enum):
    HELLO = 'hello'  # the handshake: what the server runs
    HEALTH = 'health'  # answered at once, never queued behind inference
    ACT = 'act'
    REASON = 'reason'


class ErrorCode(enum.Enum):
    DECODE = 'decode'  # not msgpack, or not a map
    TOO_LARGE = 'too_large'
    FRAMES = 'frames'  # not exactly one frame after the identity
    VERSION = 'version'  # unknown protocol version
    SCHEMA = 'schema'  # a field missing, unknown, of the wrong type, dtype, shape or value
    UNSUPPORTED = 'unsupported'  # e.g. an RTC seam on a server without guidance gradients
    SUPERSEDED = 'superseded'  # a newer request from the same client replaced this queued one
    BUSY = 'busy'  # the server's queue is full (requests of many clients): try again later
    INPUT = 'input'  # the engine refused the input (EngineInputError)
    ENGINE = 'engine'  # the engine failed
    SHUTDOWN = 'shutdown'
    INTERNAL = 'internal'  # validation itself failed on this input: a server bug, logged


@dataclass(frozen=True)
class ActRequest:
    observation: Observation
    reasoning: Reasoning | None
    noise: np.ndarray
    seam: SeamPlan | None


@dataclass(frozen=True)
class ReasonRequest:
    observation: Observation
    instruction: str
    version: int
    subgoal: bool
    max_tokens: int


MAX_TOKENS = 1024
MAX_STATE = 64  # the robot's joint state: 14 for ALOHA; a bound, so a frame cannot make it large
MAX_LATENT_TOKENS = 16384
MAX_LATENT_WIDTH = 1024

# -- field checks ---------------------------------------------------------------------------------


def fields(name: str, value, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(value, dict):
        raise ProtocolError('schema', f'{name}: expected a map, got {type(value).__name__}')
    keys = set(value)
    if missing := required - keys:
        raise ProtocolError('schema', f'{name}: missing {sorted(missing)}')
    if unknown := keys - required - set(optional):
        raise ProtocolError('schema', f'{name}: unknown fields {sorted(map(str, unknown))}')
    return value


def integer(name: str, value, lo: int = -(1 << 63), hi: int = (1 << 63) - 1) -> int:
    if type(value) is not int or not lo <= value <= hi:  # bool is not an int here
        raise ProtocolError('schema', f'{name}: expected an integer in [{lo}, {hi}], got {value!r}')
    return value


def number(name: str, value, lo: float, hi: float) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
        raise ProtocolError('schema', f'{name}: expected a number in [{lo}, {hi}], got {value!r}')
    return float(value)


def text(name: str, value) -> str:
    if not isinstance(value, str):
        raise ProtocolError('schema', f'{name}: expected a string, got {type(value).__name__}')
    return value


def boolean(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError('schema', f'{name}: expected a bool, got {type(value).__name__}')
    return value


# -- envelope -------------------------------------------------------------------------------------


def request(op: Op, request_id: int, stamp_ns: int, body: dict) -> dict:
    return {
        'v': PROTOCOL_VERSION,
        'op': op.value,
        'id': request_id,
        'stamp_ns': stamp_ns,
        'body': body,
    }


def parse_request(message: dict) -> tuple[Op, int, int, dict]:
    """(op, id, stamp_ns, body) of a decoded request; the version is checked first."""
    if type(message.get('v')) is not int or message['v'] != PROTOCOL_VERSION:  # True == 1
        raise ProtocolError(
            'version', f'protocol version {message.get("v")!r} is not {PROTOCOL_VERSION}'
        )
    fields('request', message, {'v', 'op', 'id', 'stamp_ns', 'body'})
    try:
        op = Op(message['op'])
    except (ValueError, TypeError):
        raise ProtocolError('schema', f'op: unknown operation {message["op"]!r}') from None
    request_id = integer('id', message['id'], 0)
    stamp_ns = integer('stamp_ns', message['stamp_ns'], 0)
    body = message['body']
    if not isinstance(body, dict):
        raise ProtocolError('schema', f'body: expected a map, got {type(body).__name__}')
    return op, request_id, stamp_ns, body


def request_id_of(message) -> int | None:
    """The id to echo in an error reply, if the frame got far enough to have a sane one."""
    if isinstance(message, dict) and type(message.get('id')) is int and message['id'] >= 0:
        return message['id']
    return None


def reply(op: str | None, request_id: int | None, body: dict, server: dict) -> dict:
    return {
        'v': PROTOCOL_VERSION,
        'op': op,
        'id': request_id,
        'ok': True,
        'body': body,
        'server': server,
    }


def error_reply(op, request_id, code: ErrorCode, message: str, server: dict) -> dict:
    return {
        'v': PROTOCOL_VERSION,
        'op': op,
        'id': request_id,
        'ok': False,
        'error': {'code': code.value, 'message': message[:2000]},
        'server': server,
    }


# -- handshake ------------------------------------------------------------------------------------


def hello_body(
    info: EngineInfo, control_period_ns: int, max_message_bytes: int, instance: str
) -> dict:
    return {
        'instance': instance,
        'protocol': PROTOCOL_VERSION,
        'backend': info.backend,
        'model_name': info.model_name,
        'model_hash': info.model_hash,
        'action_dim': info.action_dim,
        'chunk_length': info.chunk_length,
        'flow_steps': info.flow_steps,
        'cameras': list(info.cameras),
        'image_hw': list(info.image_hw),
        'supports_guidance_gradients': info.supports_guidance_gradients,
        'control_period_ns': control_period_ns,
        'max_message_bytes': max_message_bytes,
    }


@dataclass(frozen=True)
class Handshake:
    info: EngineInfo  # as the server's engine reports it
    control_period_ns: int  # the dt the server's model was trained for
    max_message_bytes: int
    # Random per server process, echoed in every reply: ZeroMQ reconnects a socket to a restarted
    # server by itself, and this is how the client notices and checks the handshake again.
    instance: str = field(default='', compare=False)


def parse_hello(body) -> Handshake:
    keys = {
        'protocol',
        'backend',
        'model_name',
        'model_hash',
        'action_dim',
        'chunk_length',
        'flow_steps',
        'cameras',
        'image_hw',
        'supports_guidance_gradients',
        'control_period_ns',
        'max_message_bytes',
        'instance',
    }
    b = fields('hello', body, keys)
    if type(b['protocol']) is not int or b['protocol'] != PROTOCOL_VERSION:
        raise ProtocolError(
            'version', f'server speaks protocol {b["protocol"]!r}, this client {PROTOCOL_VERSION}'
        )
    cameras = b['cameras']
    if not isinstance(cameras, list) or not cameras:
        raise ProtocolError('schema', f'hello.cameras: expected a list of names, got {cameras!r}')
    hw = b['image_hw']
    if not isinstance(hw, list) or len(hw) != 2:
        raise ProtocolError('schema', f'hello.image_hw: expected [h, w], got {hw!r}')
    info = EngineInfo(
        backend=text('hello.backend', b['backend']),
        model_name=text('hello.model_name', b['model_name']),
        model_hash=text('hello.model_hash', b['model_hash']),
        action_dim=integer('hello.action_dim', b['action_dim'], 1, 1024),
        chunk_length=integer('hello.chunk_length', b['chunk_length'], 1, 4096),
        flow_steps=integer('hello.flow_steps', b['flow_steps'], 1, 1024),
        cameras=tuple(text('hello.cameras', c) for c in cameras),
        image_hw=(
            integer('hello.image_hw', hw[0], 1, 8192),
            integer('hello.image_hw', hw[1], 1, 8192),
        ),
        supports_guidance_gradients=boolean(
            'hello.supports_guidance_gradients', b['supports_guidance_gradients']
        ),
    )
    return Handshake(
        info,
        integer('hello.control_period_ns', b['control_period_ns'], 1),
        integer('hello.max_message_bytes', b['max_message_bytes'], 1),
        text('hello.instance', b['instance']),
    )


# -- observation, reasoning, seam ----------------------------------------------------------------


def parse_observation(value, info: EngineInfo) -> Observation:
    o = fields('observation', value, {'stamp_ns', 'images', 'state'})
    stamp_ns = integer('observation.stamp_ns', o['stamp_ns'], 0)
    state = decode_array('observation.state', o['state'], (None,), np.float32)
    if state.size > MAX_STATE:
        raise ProtocolError(
            'schema', f'observation.state: {state.size} values, at most {MAX_STATE}'
        )
    images = fields('observation.images', o['images'], set(info.cameras))
    return Observation(  # images last: decoding them (JPEG) is the expensive part
        stamp_ns=stamp_ns,
        images={
            c: decode_frame(f'observation.images[{c!r}]', images[c], info.image_hw)
            for c in info.cameras
        },
        state=state,
    )


def decoded_bytes(request: ActRequest | ReasonRequest) -> int:
    """What a parsed request holds in memory while it waits (frames, state, noise, seam)."""
    arrays = [*request.observation.images.values(), request.observation.state]
    if isinstance(request, ActRequest):
        arrays.append(request.noise)
        if request.seam is not None:
            arrays += [request.seam.target, request.seam.weights]
        if request.reasoning is not None and request.reasoning.subgoal_tokens is not None:
            arrays.append(request.reasoning.subgoal_tokens)
    return sum(int(a.nbytes) for a in arrays)


REASONING_KEYS = {
    'version',
    'instruction',
    'text',
    'plan',
    'subtask',
    'movement',
    'object',
    'observation_stamp_ns',
}


def reasoning_body(reasoning: Reasoning, *, image: bool) -> dict:
    """The wire form; the decoded subgoal image goes back to the robot only (display)."""
    body = {k: getattr(reasoning, k) for k in REASONING_KEYS}
    body['subgoal_tokens'] = reasoning.subgoal_tokens
    body['subgoal_grid'] = list(reasoning.subgoal_grid) if reasoning.subgoal_grid else None
    if image:
        body['subgoal_image'] = reasoning.subgoal_image
        body['timings_ms'] = dict(reasoning.timings_ms)
    return body


def parse_reasoning(value, *, image: bool) -> Reasoning:
    extra = {'subgoal_tokens', 'subgoal_grid'} | (
        {'subgoal_image', 'timings_ms'} if image else set()
    )
    r = fields('reasoning', value, REASONING_KEYS | extra)
    tokens = grid = subgoal_image = None
    if r['subgoal_tokens'] is not None:
        tokens = decode_array(
            'reasoning.subgoal_tokens', r['subgoal_tokens'], (None, None), np.float32
        )
        g = r['subgoal_grid']
        if not isinstance(g, list) or len(g) != 2:
            raise ProtocolError('schema', f'reasoning.subgoal_grid: expected [h, w], got {g!r}')
        grid = (
            integer('reasoning.subgoal_grid', g[0], 1, MAX_LATENT_TOKENS),
            integer('reasoning.subgoal_grid', g[1], 1, MAX_LATENT_TOKENS),
        )
        if (
            grid[0] * grid[1] != tokens.shape[0]
            or tokens.shape[0] > MAX_LATENT_TOKENS
            or tokens.shape[1] > MAX_LATENT_WIDTH
        ):
            raise ProtocolError(
                'schema', f'reasoning.subgoal_tokens {tokens.shape} do not fit grid {grid}'
            )
    elif r['subgoal_grid'] is not None:
        raise ProtocolError('schema', 'reasoning.subgoal_grid given without subgoal_tokens')
    timings = {}
    if image:
        if r['subgoal_image'] is not None:
            subgoal_image = decode_array(
                'reasoning.subgoal_image', r['subgoal_image'], (None, None, 3), np.uint8
            )
        t = fields('reasoning.timings_ms', r['timings_ms'], set(), set(r['timings_ms'] or ()))
        timings = {
            text('timings key', k): number(f'timings_ms[{k!r}]', v, -1e9, 1e9) for k, v in t.items()
        }
    return Reasoning(
        version=integer('reasoning.version', r['version']),
        instruction=text('reasoning.instruction', r['instruction']),
        text=text('reasoning.text', r['text']),
        plan=text('reasoning.plan', r['plan']),
        subtask=text('reasoning.subtask', r['subtask']),
        movement=text('reasoning.movement', r['movement']),
        object=text('reasoning.object', r['object']),
        subgoal_tokens=tokens,
        subgoal_grid=grid,
        subgoal_image=subgoal_image,
        observation_stamp_ns=integer('reasoning.observation_stamp_ns', r['observation_stamp_ns']),
        timings_ms=timings,
    )


def seam_body(plan: SeamPlan | None) -> dict | None:
    if plan is None:
        return None
    return {
        'mode': plan.mode.value,
        'target': encode_array(plan.target),
        'weights': encode_array(plan.weights),
        'delay_steps': plan.delay_steps,
        'valid_steps': plan.valid_steps,
        'max_weight': plan.max_guidance,
    }


def parse_seam(value, info: EngineInfo) -> SeamPlan:
    keys = {'mode', 'target', 'weights', 'delay_steps', 'valid_steps', 'max_weight'}
    s = fields('seam', value, keys)
    try:
        mode = SeamMode(s['mode'])
    except (ValueError, TypeError):
        raise ProtocolError('schema', f'seam.mode: unknown mode {s["mode"]!r}') from None
    if mode is SeamMode.NONE:
        raise ProtocolError('schema', 'seam.mode: none is sent as seam = null')
    h, a = info.chunk_length, info.action_dim
    weights = decode_array('seam.weights', s['weights'], (h,), np.float32)
    if weights.min() < 0 or weights.max() > 1:
        raise ProtocolError('schema', 'seam.weights: must lie in [0, 1]')
    return SeamPlan(
        mode,
        decode_array('seam.target', s['target'], (h, a), np.float32),
        weights,
        integer('seam.delay_steps', s['delay_steps'], 0, h),
        integer('seam.valid_steps', s['valid_steps'], 0, h),
        number('seam.max_weight', s['max_weight'], 1e-6, 1e6),
    )  # every field checked above: the plan's own checks cannot fail here


def parse_act(body, info: EngineInfo) -> ActRequest:
    b = fields('act', body, {'observation', 'reasoning', 'noise', 'seam'})
    noise = decode_array('noise', b['noise'], (info.chunk_length, info.action_dim), np.float32)
    seam = None if b['seam'] is None else parse_seam(b['seam'], info)
    reasoning = None if b['reasoning'] is None else parse_reasoning(b['reasoning'], image=False)
    return ActRequest(parse_observation(b['observation'], info), reasoning, noise, seam)


def parse_reason(body, info: EngineInfo) -> ReasonRequest:
    b = fields('reason', body, {'observation', 'instruction', 'version', 'subgoal', 'max_tokens'})
    return ReasonRequest(
        parse_observation(b['observation'], info),
        text('instruction', b['instruction']),
        integer('version', b['version']),
        boolean('subgoal', b['subgoal']),
        integer('max_tokens', b['max_tokens'], 1, MAX_TOKENS),
    )
