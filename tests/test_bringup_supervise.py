"""The restart policy and shutdown order of `halo-ros up`, on stand-in processes (no ROS)."""

import sys
import time

import pytest

from halo_ros.bringup.profiles import NodeSpec, Profile, Restart
from halo_ros.bringup.supervise import NodeEvent, Supervisor
from halo_ros.supervisor import NodeProcess


class ScriptProcess(NodeProcess):
    """A NodeProcess running a short Python script instead of a node."""

    def __init__(self, script: str, log_path: str, stops: list):
        super().__init__('unused', log_path=log_path)
        self.script = script
        self._stops = stops

    def command(self):
        return [sys.executable, '-c', self.script]

    def stop(self, timeout_s=10.0):
        self._stops.append(self.log_path)
        return super().stop(timeout_s)


SLEEP = 'import time; time.sleep(60)'
CRASH = 'import sys; sys.exit(3)'


def _supervisor(tmp_path, scripts: dict[str, str], specs: list[NodeSpec], stops: list, **kwargs):
    chosen = Profile('test', 'stand-ins', tuple(specs))

    def factory(spec, params, log_path):
        return ScriptProcess(scripts[spec.key], log_path, stops)

    return Supervisor(chosen, str(tmp_path), process_factory=factory, **kwargs)


def _poll_until(supervisor, condition, timeout_s=20.0):
    events = []
    deadline = time.monotonic() + timeout_s
    while not condition(events):
        assert time.monotonic() < deadline, f'timed out; events so far {events}'
        events += supervisor.poll()
        time.sleep(0.02)
    return events


def _spec(key, **kwargs):
    # `module` must resolve for installed(): use a node module that exists in this checkout.
    return NodeSpec(key=key, executable='sim_node', **kwargs)


def test_crashed_policy_is_restarted_while_the_controller_keeps_running(tmp_path):
    stops = []
    supervisor = _supervisor(
        tmp_path,
        {'controller': SLEEP, 'policy': CRASH},
        [
            _spec('controller', essential=True, stop_rank=8),
            _spec('policy', restart=Restart.ON_FAILURE, max_restarts=2, restart_delay_s=0.05),
        ],
        stops,
    )
    supervisor.start()
    controller_pid = supervisor.nodes['controller'].process.process.pid
    try:
        events = _poll_until(supervisor, lambda e: ('policy', NodeEvent.GAVE_UP) in e)
        assert events.count(('policy', NodeEvent.RESTARTING)) == 2
        assert events.count(('policy', NodeEvent.RESTARTED)) == 2
        assert supervisor.nodes['policy'].exit_codes == [3, 3, 3]
        assert supervisor.failure is None, 'a policy that gave up must not end the bring-up'
        assert supervisor.nodes['controller'].running
        assert supervisor.nodes['controller'].process.process.pid == controller_pid
    finally:
        codes = supervisor.stop()
    assert codes['controller'] is not None


def test_essential_node_exit_ends_the_bring_up(tmp_path):
    supervisor = _supervisor(
        tmp_path,
        {'sim': CRASH, 'policy': SLEEP},
        [_spec('sim', essential=True), _spec('policy', restart=Restart.ON_FAILURE)],
        [],
    )
    supervisor.start()
    try:
        _poll_until(supervisor, lambda e: supervisor.failure is not None)
        assert supervisor.failure == 'sim exited with 3'
    finally:
        supervisor.stop()


def test_clean_exit_is_not_restarted(tmp_path):
    supervisor = _supervisor(
        tmp_path,
        {'policy': 'pass'},
        [_spec('policy', restart=Restart.ON_FAILURE, restart_delay_s=0.0)],
        [],
    )
    supervisor.start()
    events = _poll_until(supervisor, lambda e: ('policy', NodeEvent.GAVE_UP) in e)
    assert ('policy', NodeEvent.RESTARTING) not in events
    supervisor.stop()


def test_stop_goes_in_stop_rank_order(tmp_path):
    stops = []
    specs = [
        _spec('sim', stop_rank=9),
        _spec('recorder', stop_rank=0),
        _spec('policy', stop_rank=2),
    ]
    supervisor = _supervisor(
        tmp_path, dict.fromkeys(['sim', 'recorder', 'policy'], SLEEP), specs, stops
    )
    supervisor.start()
    supervisor.stop()
    assert [p.rsplit('/', 1)[1] for p in stops] == ['recorder.log', 'policy.log', 'sim.log']
    assert (tmp_path / 'processes.json').is_file()


def test_absent_and_without_nodes_are_not_started_and_switch_parameters(tmp_path):
    specs = [
        NodeSpec(key='controller', executable='no_such_node'),
        _spec('extra'),
        _spec('policy', params_without={'controller': {'state_topic': 'sim/joint_states'}}),
    ]
    seen = {}

    def factory(spec, params, log_path):
        seen[spec.key] = params
        return ScriptProcess(SLEEP, log_path, [])

    supervisor = Supervisor(
        Profile('test', '', tuple(specs)),
        str(tmp_path),
        without=frozenset({'extra'}),
        process_factory=factory,
    )
    assert supervisor.absent == {'controller', 'extra'}
    supervisor.start()
    supervisor.stop()
    assert seen == {'policy': {'state_topic': 'sim/joint_states'}}
    with pytest.raises(KeyError, match='nope'):
        Supervisor(Profile('test', '', tuple(specs)), str(tmp_path), without=frozenset({'nope'}))


def test_a_node_starts_only_after_the_nodes_it_waits_for_are_ready(tmp_path):
    supervisor = _supervisor(
        tmp_path,
        dict.fromkeys(['sim', 'controller', 'policy'], SLEEP),
        [
            _spec('sim'),
            _spec('controller', start_after=('sim',)),
            _spec('policy', start_after=('controller',)),
        ],
        [],
    )
    supervisor.start()
    try:
        assert list(supervisor.nodes) == ['sim']
        assert supervisor.poll(frozenset()) == []
        assert supervisor.poll(frozenset({'sim'})) == [('controller', NodeEvent.STARTED)]
        assert [s.key for s in supervisor.pending] == ['policy']
        assert supervisor.poll(frozenset({'sim', 'controller'})) == [('policy', NodeEvent.STARTED)]
        assert not supervisor.pending
    finally:
        supervisor.stop()


def test_start_after_must_name_an_earlier_node():
    with pytest.raises(ValueError, match='policy starts after'):
        Profile('bad', '', (_spec('policy', start_after=('controller',)), _spec('controller')))


def test_set_overrides_are_yaml_typed_and_malformed_ones_are_named():
    from halo_ros.bringup.up import parse_overrides

    overrides = parse_overrides(
        ['policy.chunk_rate_hz=2.5', 'cam_high.serial=012345', 'controller.calibration=my.yaml']
    )
    assert overrides == {
        'policy': {'chunk_rate_hz': 2.5},
        'cam_high': {'serial': '012345'},
        'controller': {'calibration': 'my.yaml'},
    }
    with pytest.raises(ValueError, match='policy=1'):
        parse_overrides(['policy=1'])


def test_string_parameters_reach_the_node_as_strings(tmp_path):
    from halo_ros.bringup.profiles import profile
    from halo_ros.bringup.supervise import make_process

    spec = profile('robot').node('cam_high')
    params = {'serial': '012345', 'device': '/dev/video0', 'fps': 30.0, 'driver': 'true'}
    command = make_process(spec, params, str(tmp_path / 'x.log')).command()
    values = [command[i + 1] for i, a in enumerate(command) if a == '-p']
    assert values == ["serial:='012345'", 'device:=/dev/video0', 'fps:=30.0', "driver:='true'"]


def test_an_integer_override_of_a_decimal_parameter_reaches_the_node_as_a_decimal():
    """`--set policy.remote_timeout_s=10`: rclpy refuses an integer for a double parameter, so
    the node crashed on every restart; it gets 10.0 (the profile's YAML says 1.0)."""
    from halo_ros.bringup.profiles import profile
    from halo_ros.bringup.supervise import typed_like

    spec = profile('serve').node('policy')
    typed = typed_like({'remote_timeout_s': 10, 'jpeg_quality': 80, 'server': 'tcp://h:1'}, spec)
    assert typed == {'remote_timeout_s': 10.0, 'jpeg_quality': 80, 'server': 'tcp://h:1'}
    assert isinstance(typed['remote_timeout_s'], float)
    assert isinstance(typed['jpeg_quality'], int)  # an integer parameter stays one
