"""Calibrate the arms (joint offsets, gripper range) or a camera (checkerboard intrinsics).

`halo-ros calibrate arms`: guided, per arm, with torque off: zero pose, positive pose, gripper
open, gripper closed; writes a calibration YAML from a template (ports, models, limits).
`halo-ros calibrate camera --images DIR`: intrinsics from checkerboard photos -> camera_info YAML.
"""

import logging

from halo_ros.drivers.aloha_calibration import ArmName
from halo_ros.paths import calibration_file

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest='what', required=True, metavar='arms|camera')
    arms = sub.add_parser('arms', help='joint offsets/directions and gripper ticks')
    arms.add_argument(
        '--template',
        default=None,
        help='calibration to start from: ports, models, limits (default '
        'calibration/example_aloha.yaml)',
    )
    arms.add_argument('--output', required=True, help='calibration YAML to write')
    arms.add_argument(
        '--arm',
        action='append',
        choices=[a.value for a in ArmName],
        help='arm to calibrate (repeat; default every arm of the template)',
    )
    arms.add_argument('--samples', type=int, default=10, help='reads averaged per pose')
    camera = sub.add_parser('camera', help='checkerboard intrinsics from a folder of images')
    camera.add_argument('--images', required=True, help='folder of checkerboard photos')
    camera.add_argument(
        '--board', default='9x6', help='inner corners COLUMNSxROWS (a 10x7-square board is 9x6)'
    )
    camera.add_argument('--square-mm', type=float, required=True, help='side of one square')
    camera.add_argument('--name', default='', help='camera name (cam_high, ...)')
    camera.add_argument('--output', required=True, help='camera_info YAML to write')


def _ask_console(arm: ArmName, step, instruction: str) -> None:
    input(f'\n[{arm.value}] {step.value}: {instruction}\n  Press Enter when ready... ')


def run(args) -> int:
    if args.what == 'arms':
        from halo_ros.calibrate.arms import calibrate_arms

        template = args.template or calibration_file('example_aloha.yaml')
        print(
            f'Calibrating from {template}. Torque goes OFF on each arm while it is calibrated: '
            'support it before pressing Enter.'
        )
        calibration = calibrate_arms(
            template, args.output, _ask_console, arms=args.arm, samples=args.samples
        )
        print(f'\nwrote {args.output} ({", ".join(a.value for a in calibration.arms)})')
        for name, arm in calibration.arms.items():
            offsets = [j.offset_ticks for j in arm.joints]
            directions = [j.direction for j in arm.joints]
            print(
                f'  {name.value}: offsets {offsets}, directions {directions}, gripper open '
                f'{arm.gripper.open_ticks} closed {arm.gripper.closed_ticks}'
            )
        return 0
    from halo_ros.calibrate.camera import calibrate_images

    columns, _, rows = args.board.partition('x')
    if not (columns.isdigit() and rows.isdigit()):
        raise ValueError(f'--board {args.board!r}: expected COLUMNSxROWS, e.g. 9x6')
    result = calibrate_images(
        args.images, (int(columns), int(rows)), args.square_mm, camera_name=args.name
    )
    result.intrinsics.save(args.output)
    k = result.intrinsics.k
    print(
        f'wrote {args.output}: {result.intrinsics.width}x{result.intrinsics.height}, '
        f'fx {k[0]:.1f} fy {k[4]:.1f} cx {k[2]:.1f} cy {k[5]:.1f}, RMS {result.rms_px:.3f} px '
        f'from {len(result.used)} images'
        + (f' (no board in: {", ".join(result.skipped)})' if result.skipped else '')
    )
    return 0
