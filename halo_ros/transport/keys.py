"""Create CURVE key pairs for `halo-ros serve` and its robots (ZeroMQ certificate files).

`halo-ros keys keys/ --name server` writes keys/server.key (public: give it to robots) and
keys/server.key_secret (keep it on the server); one pair per robot likewise, whose .key goes into
the server's --authorized-keys folder.
"""

import logging

from halo_ros.transport.security import make_keys

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument('folder', help='where the key files go')
    parser.add_argument('--name', default='server', help='file name stem (server, robot1, ...)')


def run(args) -> int:
    try:
        public, secret = make_keys(args.folder, args.name)
    except FileExistsError as error:
        log.error('%s', error)
        return 1
    print(f'public key {public}\nsecret key {secret} (mode 600; never copy it off this machine)')
    return 0
