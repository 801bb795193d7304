"""`halo-ros`: the one user-facing command.

Each subcommand lives in its own module whose docstring's first line is its help, and which
exposes `add_arguments(parser)` and `run(args) -> int`; modules are imported only when their
subcommand runs, so `halo-ros --help` stays fast and a robot without torch can still run the
commands that do not need it.
"""

import argparse
import importlib
import importlib.util
import logging
import sys

# subcommand -> module. Keep alphabetical.
COMMANDS = {
    'annotate': 'halo_ros.recording.annotate',
    'bench': 'halo_ros.engine.bench',
    'bench-controller': 'halo_ros.control.bench',
    'bench-dynamixel': 'halo_ros.drivers.dynamixel.bench',
    'bench-policy': 'halo_ros.runtime.async_bench',
    'bench-recording': 'halo_ros.recording.bench',
    'bench-seams': 'halo_ros.engine.seam_bench',
    'bench-sim': 'halo_ros.sim.bench',
    'bench-transport': 'halo_ros.transport.bench',
    'build-engine': 'halo_ros.engine.build_engine_cmd',
    'calibrate': 'halo_ros.calibrate.command',
    'collect': 'halo_ros.collect',
    'demo': 'halo_ros.demo',
    'eval': 'halo_ros.evaluation.command',
    'eval-open-loop': 'halo_ros.evaluation.open_loop_command',
    'expert-eval': 'halo_ros.sim.expert_eval',
    'export': 'halo_ros.engine.export_cmd',
    'export-dataset': 'halo_ros.recording.export_dataset',
    'keys': 'halo_ros.transport.keys',
    'model': 'halo_ros.model.info',
    'recover-episodes': 'halo_ros.recording.recover',
    'report': 'halo_ros.viz.report',
    'seam-eval': 'halo_ros.runtime.seam_eval',
    'serve': 'halo_ros.transport.serve',
    'soak-controller': 'halo_ros.control.soak',
    'train': 'halo_ros.training.command',
    'up': 'halo_ros.bringup.up',
    'view': 'halo_ros.viz.view',
    'virtual-bus': 'halo_ros.sim.virtual_bus.serve',
}


def _help_line(module_name: str) -> str:
    # The help line is read from the module's first docstring line without importing heavy deps.
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return ''
    with open(spec.origin, encoding='utf-8') as f:
        source = f.read(2000)
    for quote in ('"""', "'''"):
        if source.lstrip().startswith(quote):
            return source.lstrip()[3:].split('\n', 1)[0].strip().rstrip('.')
    return ''


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog='halo-ros', description=__doc__.split('\n')[0])
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, module in COMMANDS.items():
        sub.add_parser(name, help=_help_line(module), add_help=False)

    # Two passes: find the subcommand, then let its module define the rest of the arguments.
    known, _ = parser.parse_known_args(argv)
    if known.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[known.command])
    command_parser = argparse.ArgumentParser(
        prog=f'halo-ros {known.command}', description=module.__doc__
    )
    command_parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    module.add_arguments(command_parser)
    plotted = known.command.startswith('bench') or known.command == 'seam-eval'
    if plotted:  # one place for every benchmark: halo_ros.benchmarks draws what report() prints
        command_parser.add_argument(
            '--plot', metavar='FILE.png', help='also draw the results into this PNG (matplotlib)'
        )
    rest = argv[argv.index(known.command) + 1 :]
    args = command_parser.parse_args(rest)
    logging.basicConfig(
        level=logging.DEBUG if (args.verbose or known.verbose) else logging.INFO,
        format='%(asctime)s %(levelname).1s %(name)s: %(message)s',
        datefmt='%H:%M:%S',
    )
    if plotted and args.plot:
        from halo_ros.benchmarks import run_plotted

        return run_plotted(module.run, args, known.command)
    return int(module.run(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
