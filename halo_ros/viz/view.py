"""Show the live graph in Foxglove: its topics over the Foxglove WebSocket protocol (loopback).

    halo-ros view                          # ws://127.0.0.1:8765, the domain in ROS_DOMAIN_ID
    halo-ros view --domain 42 --topics cam_high/image_raw halo/reasoning follower_left/joint_states
    halo-ros view --host 0.0.0.0 --allow-remote     # beyond this machine: no authentication!

In Foxglove: Open connection -> Foxglove WebSocket -> the URL printed at start, then Layouts ->
Import the shipped layout (the path is printed too; `config/foxglove_layout.json` in a checkout).
The same layout opens a recorded episode bag (Open local file -> the .mcap). Needs only a pip
install (the ros and viz extras), no ROS command-line tools.
"""

import logging

from halo_ros.viz.foxglove_bridge import DEFAULT_PORT, check_bind

log = logging.getLogger(__name__)

LAYOUT_NAME = 'foxglove_layout.json'


def add_arguments(parser) -> None:
    parser.add_argument('--host', default='127.0.0.1', help='address to serve on (loopback)')
    parser.add_argument('--port', type=int, default=DEFAULT_PORT, help='0: any free port')
    parser.add_argument(
        '--allow-remote',
        action='store_true',
        help='allow a non-loopback --host (anyone who reaches it sees the whole graph)',
    )
    parser.add_argument('--domain', type=int, default=None, help='ROS_DOMAIN_ID (default: env)')
    parser.add_argument(
        '--topics', nargs='+', default=(), metavar='TOPIC', help='only these (default: all)'
    )


def layout_path():
    from halo_ros.paths import config_file

    return config_file(LAYOUT_NAME)


def run(args) -> int:
    try:
        check_bind(args.host, allow_remote=args.allow_remote)
    except ValueError as error:
        log.error('%s', error)
        return 2
    from halo_ros import rosenv
    from halo_ros.viz.foxglove_bridge import FoxgloveBridge

    rosenv.apply(args.domain)  # before rclpy is imported
    try:
        bridge = FoxgloveBridge(host=args.host, port=args.port, allow_remote=args.allow_remote)
    except OSError as error:
        log.error('%s', error)
        return 2
    print(f'Foxglove WebSocket: {bridge.url}  layout: {layout_path()}  (Ctrl-C stops)', flush=True)
    from halo_ros.nodes.foxglove_bridge import run_bridge

    try:
        run_bridge(bridge, args.topics)
    finally:
        bridge.close()
    return 0
