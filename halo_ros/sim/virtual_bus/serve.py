"""Serve virtual ALOHA arms on Dynamixel Protocol 2.0 pseudo-terminals until Ctrl-C.

Each arm is a kinematic stand-in (shafts slew to their goal while torque is on) behind nine
emulated servos, at the port path its calibration file names, so any Dynamixel code (ours, the
SDK's examples, Dynamixel Wizard through socat) can talk to it as to the real arm.
"""

import logging
import signal
import threading

from halo_ros.drivers.aloha_calibration import ArmName, load
from halo_ros.paths import calibration_file
from halo_ros.sim.virtual_bus.bus import FaultInjection, VirtualBus
from halo_ros.sim.virtual_bus.kinematic_arm import KinematicArm

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument(
        '--arm',
        action='append',
        choices=[a.value for a in ArmName],
        help='arm to serve (repeat for several; default follower_left)',
    )
    parser.add_argument(
        '--calibration',
        default=None,
        help='calibration YAML of the robot to emulate (default calibration/sim_aloha.yaml)',
    )
    parser.add_argument('--drop', type=float, default=0.0, help='probability of dropping a reply')
    parser.add_argument('--corrupt', type=float, default=0.0, help='probability of a bad reply CRC')
    parser.add_argument(
        '--reply-latency-ms', type=float, default=0.0, help='delay before replies (wire + USB time)'
    )


def run(args) -> int:
    calibration = load(args.calibration or calibration_file('sim_aloha.yaml'))
    faults = FaultInjection(drop_probability=args.drop, corrupt_probability=args.corrupt)
    buses = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for name in args.arm or [ArmName.FOLLOWER_LEFT.value]:
            arm_calibration = calibration.arm(name)
            bus = VirtualBus(
                KinematicArm(name),
                arm_calibration,
                link=arm_calibration.port,
                faults=faults,
                reply_latency_ms=args.reply_latency_ms,
            )
            buses.append(bus)
            path = bus.start()
            print(f'{name} {path}', flush=True)  # the CLI's output: one line per served arm
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for bus in buses:
            bus.stop()
    return 0
