"""What runs in each bring-up profile: nodes, parameters files, remaps, environment, restarts.

This is the single description both `launch/*.launch.py` (on a ROS 2 machine) and `halo-ros up`
(supervised processes, no ros2 CLI needed) are built from, so the two cannot drift apart.
Paths of parameters files are relative to the package's share folder (paths.share_dir()).

Profiles:
- sim:    MuJoCo ALOHA (its four arms on virtual Dynamixel buses), controller, policy
- robot:  three cameras, controller on the real arms, policy
- teleop: three cameras, controller switched to TELEOP (leaders drive followers)
- record: teleop + the episode recorder (demonstrations for training)
- serve:  robot, with the policy computed on a remote GPU (`halo-ros serve` there)
"""

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from halo_ros import rosenv
from halo_ros.recording import topics as T

PACKAGE = 'halo_ros'


class Restart(enum.Enum):
    NEVER = 'never'
    ON_FAILURE = 'on_failure'  # a non-zero exit or a signal restarts it (launch: respawn)


# Every topic the graph carries (DESIGN.md): remaps and readiness may only name these.
TOPICS: Mapping[str, str] = MappingProxyType(
    {
        **{f'{c}/image_raw': T.IMAGE for c in T.CAMERAS},
        **{f'{c}/camera_info': T.CAMERA_INFO for c in T.CAMERAS},
        **{f'{a}/joint_states': T.JOINT_STATE for a in T.FOLLOWERS + T.LEADERS},
        T.ACTION_CHUNK_TOPIC: T.JOINT_TRAJECTORY,
        T.REASONING_TOPIC: T.STRING,
        T.SUBGOAL_IMAGE_TOPIC: T.IMAGE,
        T.INSTRUCTION_TOPIC: T.STRING,
        T.COMMAND_TOPIC: T.JOINT_STATE,
        T.CONTROL_STATE_TOPIC: T.STRING,
        T.MODE_TOPIC: T.STRING,
        'sim/status': T.STRING,
        T.REWARD_TOPIC: T.FLOAT32,
        T.SUCCESS_TOPIC: T.BOOL,
        'sim/joint_states': T.JOINT_STATE,
        'diagnostics': T.DIAGNOSTIC_ARRAY,
    }
)


def _frozen(mapping: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class NodeSpec:
    key: str  # unique in its profile; also what `--without KEY` names
    executable: str  # console entry point (setup.py NODES) = module halo_ros.nodes.<executable>
    name: str | None = None  # node name (__node:=); None keeps the node's own
    params_files: tuple[str, ...] = ()  # ROS parameters files under the share folder, in order
    params: Mapping = field(default_factory=_frozen)  # overrides applied after the files
    remaps: tuple[tuple[str, str], ...] = ()  # (from, to); `to` is a TOPICS name
    restart: Restart = Restart.NEVER
    max_restarts: int = 5  # per bring-up; then the node stays down (and an essential one ends it)
    restart_delay_s: float = 2.0  # a crash loop must not spin the CPU
    essential: bool = False  # its death ends the bring-up (arms to hold first)
    stop_rank: int = 5  # shutdown order, lowest first: recorder, policy, cameras, controller, sim
    ready_topics: tuple[str, ...] = ()  # the first message on each means the node is up
    # Keys of nodes that must be ready first (absent ones count as ready). Staging the start keeps
    # the heavy start-ups (MuJoCo, torch) from starving the controller while it connects.
    start_after: tuple[str, ...] = ()
    # Parameters to use while the node with that key is not running (absent or --without).
    params_without: Mapping[str, Mapping] = field(default_factory=_frozen)
    start_services: tuple[str, ...] = ()  # std_srvs/Trigger under ~/ called once it is ready
    stop_services: tuple[str, ...] = ()  # ... and called before anything is stopped

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.restart_delay_s < 0:
            raise ValueError(
                f'{self.key}: max_restarts {self.max_restarts} and restart_delay_s '
                f'{self.restart_delay_s} must be >= 0'
            )
        object.__setattr__(self, 'params', _frozen(self.params))
        object.__setattr__(
            self, 'params_without', _frozen({k: _frozen(v) for k, v in self.params_without.items()})
        )

    @property
    def module(self) -> str:
        return f'{PACKAGE}.nodes.{self.executable}'

    @property
    def node_name(self) -> str:
        """The name the node runs under (its own default when not overridden)."""
        return self.name or _DEFAULT_NODE_NAMES.get(self.executable, self.executable)

    def parameters(self, absent: frozenset[str] = frozenset()) -> dict:
        """The override parameters, with those for absent nodes applied on top."""
        values = dict(self.params)
        for key, extra in self.params_without.items():
            if key in absent:
                values.update(extra)
        return values


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    nodes: tuple[NodeSpec, ...]
    env: Mapping[str, str] = field(default_factory=_frozen)  # beyond rosenv's

    def __post_init__(self) -> None:
        keys = [n.key for n in self.nodes]
        if len(set(keys)) != len(keys):
            raise ValueError(f'profile {self.name}: node keys repeat: {keys}')
        for spec in self.nodes:
            unknown = set(spec.start_after) - set(keys[: keys.index(spec.key)])
            if unknown:
                raise ValueError(
                    f'profile {self.name}: {spec.key} starts after {sorted(unknown)}, which are '
                    'not nodes listed before it'
                )
        object.__setattr__(self, 'env', _frozen(self.env))

    def node(self, key: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.key == key:
                return spec
        raise KeyError(f'profile {self.name}: no node {key!r}; has {[n.key for n in self.nodes]}')

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The variables this profile sets: rosenv's (Fast DDS profile, discovery, RMW, run dir)
        filled in over `base` (user values win), plus the profile's own."""
        base = dict(base or {})
        full = rosenv.ros_environment(base=base)
        return {k: v for k, v in full.items() if base.get(k) != v} | dict(self.env)


# The names the nodes give themselves (Node.__init__), for service paths like /controller/hold.
_DEFAULT_NODE_NAMES = {
    'sim_node': 'sim',
    'policy_node': 'policy',
    'controller_node': 'controller',
    'recorder_node': 'recorder_node',
}

_POLICY_READY = (T.ACTION_CHUNK_TOPIC,)


def _sim() -> NodeSpec:
    return NodeSpec(
        key='sim',
        executable='sim_node',
        params_files=('config/sim.yaml',),
        essential=True,  # it hosts the virtual buses: without it the controller has no arms
        stop_rank=9,
        ready_topics=('cam_high/image_raw', 'sim/status'),
    )


def _controller(
    calibration: str,
    *,
    start_services: tuple[str, ...] = (),
    start_after: tuple[str, ...] = (),
    restart: Restart = Restart.NEVER,
) -> NodeSpec:
    # controller_node reads its own config (`config` parameter, default config/controller.yaml);
    # the calibration file is the one per-robot choice, so it is set here.
    return NodeSpec(
        key='controller',
        executable='controller_node',
        params={'calibration': calibration},
        # A dead controller means unpowered or unsupervised arms: stop everything. On a real robot
        # it is never restarted behind the operator's back.
        essential=True,
        restart=restart,
        max_restarts=3,
        stop_rank=8,
        ready_topics=('follower_left/joint_states', T.MODE_TOPIC),
        start_services=start_services,
        stop_services=('hold',),
        start_after=start_after,
    )


def _policy(params_file: str = 'config/policy.yaml', params_without=None) -> NodeSpec:
    return NodeSpec(
        key='policy',
        executable='policy_node',
        params_files=(params_file,),
        params_without=params_without or {},
        # A crashed policy is restarted; the controller meanwhile holds (its watchdog).
        restart=Restart.ON_FAILURE,
        stop_rank=2,
        ready_topics=_POLICY_READY,
        start_after=('controller',),
    )


def _cameras() -> tuple[NodeSpec, ...]:
    return tuple(
        NodeSpec(
            key=camera,
            executable='camera_node',
            name=camera,
            params_files=('config/cameras.yaml',),
            remaps=(('image_raw', f'{camera}/image_raw'), ('camera_info', f'{camera}/camera_info')),
            restart=Restart.ON_FAILURE,  # the driver reconnects itself; this covers a crash
            stop_rank=4,
            ready_topics=(f'{camera}/image_raw',),
        )
        for camera in T.CAMERAS
    )


def _recorder(robot: str) -> NodeSpec:
    return NodeSpec(
        key='recorder',
        executable='recorder_node',
        params_files=('config/recorder.yaml',),
        params={'robot': robot},
        restart=Restart.ON_FAILURE,  # a restart starts a new episode; closed ones are safe
        stop_rank=0,  # first: it closes the bag while everything still publishes
    )


REAL_CALIBRATION = 'example_aloha.yaml'  # copy it for your robot and point this (or :=) at it

_TELEOP = ('engage_teleop',)

PROFILES: Mapping[str, Profile] = MappingProxyType(
    {
        'sim': Profile(
            'sim',
            'MuJoCo ALOHA on virtual Dynamixel buses, controller, policy',
            (
                _sim(),
                # Simulated arms may be reconnected freely: a controller that lost the virtual
                # buses (they answer late on an overloaded machine) is restarted.
                _controller('sim_aloha.yaml', start_after=('sim',), restart=Restart.ON_FAILURE),
                # Without a controller nobody publishes follower joint states: the policy then
                # reads the simulator's ground truth, so the rest of the graph still runs.
                _policy(
                    'config/policy_sim.yaml', {'controller': {'state_topic': 'sim/joint_states'}}
                ),
            ),
        ),
        'robot': Profile(
            'robot',
            'cameras, controller on the real arms, policy (engage it with ~/engage_policy)',
            (*_cameras(), _controller(REAL_CALIBRATION), _policy()),
        ),
        'teleop': Profile(
            'teleop',
            'cameras, controller in TELEOP: the leader arms drive the followers',
            (*_cameras(), _controller(REAL_CALIBRATION, start_services=_TELEOP)),
        ),
        'record': Profile(
            'record',
            'teleop plus the recorder: one rosbag2 (MCAP) episode per ~/start .. ~/stop',
            (
                *_cameras(),
                _controller(REAL_CALIBRATION, start_services=_TELEOP),
                _recorder('aloha'),
            ),
        ),
        'serve': Profile(
            'serve',
            'robot, with the policy computed on a remote GPU running `halo-ros serve`',
            (*_cameras(), _controller(REAL_CALIBRATION), _policy('config/policy_remote.yaml')),
        ),
    }
)


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f'no bring-up profile {name!r}; choose one of {sorted(PROFILES)}') from None
