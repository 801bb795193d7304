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


# Parameters settable as `ros2 launch ... name:=value`, by node key.
LAUNCH_ARGUMENTS = {'controller': ('calibration',)}

# `ros2 launch` has no readiness signal: a node that starts after others waits this long per stage.
STAGE_DELAY_S = 5.0


def start_delay_s(chosen: Profile, spec: NodeSpec) -> float:
    """STAGE_DELAY_S times the length of the longest start_after chain leading to `spec`."""
    if not spec.start_after:
        return 0.0
    return STAGE_DELAY_S + max(start_delay_s(chosen, chosen.node(k)) for k in spec.start_after)


def service_call_command(spec: NodeSpec, service: str) -> list[str]:
    return ['ros2', 'service', 'call', f'/{spec.node_name}/{service}', 'std_srvs/srv/Trigger']


def launch_description(profile_name: str):
    """The LaunchDescription of one profile; called from launch/<profile>.launch.py."""
    from launch.actions import (
        DeclareLaunchArgument,
        EmitEvent,
        ExecuteProcess,
        RegisterEventHandler,
        SetEnvironmentVariable,
        TimerAction,
    )
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    chosen: Profile = profile(profile_name)
    actions = [
        SetEnvironmentVariable(name, value)
        for name, value in sorted(chosen.environment(os.environ).items())
    ]
    for spec in chosen.nodes:
        arguments = node_arguments(spec)
        for name in LAUNCH_ARGUMENTS.get(spec.key, ()):
            # e.g. `ros2 launch halo_ros robot.launch.py calibration:=/etc/halo_ros/my_aloha.yaml`
            if name in spec.params:
                actions.append(DeclareLaunchArgument(name, default_value=str(spec.params[name])))
                arguments['parameters'][-1][name] = LaunchConfiguration(name)
        node = Node(**arguments)
        delay_s = start_delay_s(chosen, spec)
        actions.append(TimerAction(period=delay_s, actions=[node]) if delay_s else node)
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
            actions.append(
                TimerAction(
                    period=start_delay_s(chosen, spec) + STAGE_DELAY_S,
                    actions=[
                        ExecuteProcess(cmd=service_call_command(spec, s), output='screen')
                        for s in spec.start_services
                    ],
                )
            )
    return LaunchDescription(actions)
