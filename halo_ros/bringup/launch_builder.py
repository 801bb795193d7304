"""Turn a bring-up profile into a ROS 2 LaunchDescription (for launch/*.launch.py).

`node_arguments()` is plain data (what goes into launch_ros's Node), testable without ROS launch
installed; `launch_description()` imports launch/launch_ros only when `ros2 launch` calls it.
"""

import os

from halo_ros.bringup.profiles import PACKAGE, NodeSpec, Profile, Restart, profile
from halo_ros.paths import share_dir


def node_arguments(spec: NodeSpec) -> dict:
    """Keyword arguments for launch_ros.actions.Node, in the launch file's terms."""
    share = share_dir()
    arguments = {
        'package': PACKAGE,
        'executable': spec.executable,
        'parameters': [str(share / f) for f in spec.params_files] + [dict(spec.parameters())],
        'remappings': [tuple(r) for r in spec.remaps],
        'output': 'screen',
        'respawn': spec.restart is Restart.ON_FAILURE,
        'respawn_delay': spec.restart_delay_s,
        'emulate_tty': True,
    }
    if spec.name:
        arguments['name'] = spec.name
    return arguments


def service_call_command(spec: NodeSpec, service: str) -> list[str]:
    return ['ros2', 'service', 'call', f'/{spec.node_name}/{service}', 'std_srvs/srv/Trigger']


def launch_description(profile_name: str):
    """The LaunchDescription of one profile; called from launch/<profile>.launch.py."""
    from launch.actions import (
        EmitEvent,
        ExecuteProcess,
        RegisterEventHandler,
        SetEnvironmentVariable,
        TimerAction,
    )
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch_ros.actions import Node

    from launch import LaunchDescription

    chosen: Profile = profile(profile_name)
    actions = [
        SetEnvironmentVariable(name, value)
        for name, value in sorted(chosen.environment(os.environ).items())
    ]
    for spec in chosen.nodes:
        node = Node(**node_arguments(spec))
        actions.append(node)
        if spec.essential:
            # Like `halo-ros up`: the controller or simulator gone means nothing else is safe.
            actions.append(
                RegisterEventHandler(
                    OnProcessExit(
                        target_action=node,
                        on_exit=[EmitEvent(event=Shutdown(reason=f'{spec.key} exited'))],
                    )
                )
            )
        if spec.start_services:
            # `ros2 launch` has no readiness signal; the controller connects within seconds.
            actions.append(
                TimerAction(
                    period=5.0,
                    actions=[
                        ExecuteProcess(cmd=service_call_command(spec, s), output='screen')
                        for s in spec.start_services
                    ],
                )
            )
    return LaunchDescription(actions)
