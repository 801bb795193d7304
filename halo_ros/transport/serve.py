"""Serve a HALO engine to robots over ZeroMQ (loopback unless CURVE keys are given).

Robots connect with the policy node's `backend:=remote server:=tcp://HOST:PORT`. Binding anything
but loopback needs `--server-key` (this server's .key_secret) and `--authorized-keys` (a folder of
the robots' .key files); `halo-ros keys` makes both.
"""

import logging
import signal

from halo_ros.transport.security import ServerKeys, check_bind
from halo_ros.transport.server import DEFAULT_BIND, EngineServer, ServerConfig
from halo_ros.transport.wire import WireLimits

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument(
        '--bind', default=DEFAULT_BIND, help=f'ZeroMQ endpoint (default {DEFAULT_BIND})'
    )
    parser.add_argument('--model', default='halo-tiny', help='preset under models/ or a YAML path')
    parser.add_argument('--checkpoint', default=None, help='weights folder (default: random)')
    parser.add_argument('--backend', default='torch', help='in-process backend behind the server')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--image-size',
        type=int,
        nargs=2,
        default=(320, 240),
        metavar=('W', 'H'),
        help='frames the engine takes; robots resize to this before sending',
    )
    parser.add_argument('--chunk-length', type=int, default=50)
    parser.add_argument('--flow-steps', type=int, default=9)
    parser.add_argument(
        '--control-rate-hz',
        type=float,
        default=50.0,
        help='the rate the chunk actions are meant for (checked by robots)',
    )
    parser.add_argument('--seed', type=int, default=0, help='random weights seed')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    parser.add_argument('--server-key', default=None, help="this server's .key_secret file")
    parser.add_argument('--authorized-keys', default=None, help='folder of client .key files')
    parser.add_argument('--max-message-mb', type=float, default=16.0)


def server_keys(args) -> ServerKeys | None:
    if bool(args.server_key) != bool(args.authorized_keys):
        raise SystemExit('--server-key and --authorized-keys go together')
    return ServerKeys(args.server_key, args.authorized_keys) if args.server_key else None


def run(args) -> int:
    from halo_ros.engine.loading import (
        BackendUnavailable,
        EngineConfig,
        load_engine,
        require_backend,
    )

    keys = server_keys(args)
    if args.backend == 'remote':
        log.error('--backend remote would serve a server: name an in-process backend')
        return 2
    try:
        check_bind(args.bind, keys)  # before minutes of model loading
    except PermissionError as error:
        log.error('%s', error)
        return 2
    config = ServerConfig(
        bind=args.bind,
        keys=keys,
        limits=WireLimits(max_message_bytes=round(args.max_message_mb * (1 << 20))),
        control_period_s=1.0 / args.control_rate_hz,
    )
    try:
        require_backend(args.backend)
    except BackendUnavailable as error:  # a robot install: serve runs on the GPU computer
        log.error('%s', error)
        return 2
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    engine = load_engine(
        EngineConfig(
            model=args.model,
            checkpoint=args.checkpoint,
            backend=args.backend,
            device=args.device,
            image_hw=(args.image_size[1], args.image_size[0]),
            chunk_length=args.chunk_length,
            flow_steps=args.flow_steps,
            seed=args.seed,
        )
    )
    server = EngineServer(engine, config).start()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.request_stop())
    log.info('ready: %s%s', server.endpoint, ' (CURVE)' if keys else ' (loopback, no auth)')
    server.wait()
    server.stop()
    engine.close()
    return 0
