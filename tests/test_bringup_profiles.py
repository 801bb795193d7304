"""The launch files and `halo-ros up` come from one description; check that description is sound.

Nothing here imports the ROS launch packages (not installable from PyPI): the launch files are
read with ast, and launch_description() runs against recording stand-ins for launch/launch_ros.
"""

import ast
import sys
import types
from pathlib import Path

import pytest
import yaml

from halo_ros.bringup import launch_builder
from halo_ros.bringup.profiles import PROFILES, TOPICS, Restart, profile
from halo_ros.bringup.supervise import make_process

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILES = sorted((ROOT / 'launch').glob('*.launch.py'))
ALL_NODES = [(p.name, n) for p in PROFILES.values() for n in p.nodes]


def _setup_nodes() -> dict[str, str]:
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == 'NODES':
            return ast.literal_eval(node.value)
    raise AssertionError('setup.py has no NODES dict')


def _node_source(executable: str) -> Path:
    return ROOT / 'halo_ros' / 'nodes' / f'{executable}.py'


def test_every_issue_profile_has_a_launch_file_naming_a_real_profile():
    by_profile = {}
    for path in LAUNCH_FILES:
        tree = ast.parse(path.read_text())
        constants = {
            n.targets[0].id: ast.literal_eval(n.value)
            for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
        }
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        top_imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        assert 'generate_launch_description' in functions, path.name
        assert not top_imports, f'{path.name}: imports at module level (launch must stay lazy)'
        assert constants['PROFILE'] in PROFILES, path.name
        assert path.name == f'{constants["PROFILE"]}.launch.py'
        by_profile[constants['PROFILE']] = path
    assert {'sim', 'robot', 'teleop', 'record'} <= set(by_profile)


@pytest.mark.parametrize(('profile_name', 'spec'), ALL_NODES, ids=lambda v: getattr(v, 'key', v))
def test_node_is_an_installed_entry_point_with_existing_params_files(profile_name, spec):
    if not _node_source(spec.executable).is_file():
        pytest.skip(f'{spec.executable}.py is not in this checkout (merged from another branch)')
    nodes = _setup_nodes()
    assert spec.executable in nodes, f'{spec.executable} is not an entry point in setup.py'
    assert nodes[spec.executable] == f'{spec.module}:main'
    for relative in spec.params_files:
        path = ROOT / relative
        assert path.is_file(), f'{profile_name}/{spec.key}: {relative} does not exist'
        document = yaml.safe_load(path.read_text())
        section = document.get(spec.node_name) or document.get('/**')
        assert section and 'ros__parameters' in section, (
            f'{relative} has no `{spec.node_name}: ros__parameters:` section for {spec.key}'
        )
    calibration = spec.params.get('calibration')
    if calibration is not None:
        assert (ROOT / 'calibration' / calibration).is_file(), calibration


@pytest.mark.parametrize(('profile_name', 'spec'), ALL_NODES, ids=lambda v: getattr(v, 'key', v))
def test_params_files_set_only_parameters_the_node_declares(profile_name, spec):
    source = _node_source(spec.executable)
    if not source.is_file():
        pytest.skip(f'{source.name} is not in this checkout (merged from another branch)')
    text = source.read_text()
    names = set()
    for relative in spec.params_files:
        document = yaml.safe_load((ROOT / relative).read_text())
        names |= set(document[spec.node_name]['ros__parameters'])
    names |= set(spec.params)
    for extra in spec.params_without.values():
        names |= set(extra)
    remote = {'server', 'server_key', 'client_key', 'remote_timeout_s', 'jpeg_quality'}
    if 'config/policy_remote.yaml' in spec.params_files and "'server'" not in text:
        names -= remote  # this checkout predates the remote backend (merged from another branch)
    declared = {n for n in names if f"'{n}'" in text}
    if 'POLICY_DEFAULTS' in text:  # the policy node declares its parameters from the core's table
        from halo_ros.runtime.settings import POLICY_DEFAULTS

        declared |= set(POLICY_DEFAULTS)
    missing = sorted(names - declared)
    assert not missing, f'{spec.executable} declares no parameter {missing}'


@pytest.mark.parametrize(('profile_name', 'spec'), ALL_NODES, ids=lambda v: getattr(v, 'key', v))
def test_remaps_and_readiness_name_real_topics(profile_name, spec):
    for _, target in spec.remaps:
        assert target in TOPICS, f'{profile_name}/{spec.key}: remap to unknown topic {target}'
    for topic in spec.ready_topics:
        assert topic in TOPICS, f'{profile_name}/{spec.key}: ready topic {topic} is unknown'


def test_controller_config_file_exists_once_merged():
    if not _node_source('controller_node').is_file():
        pytest.skip('controller_node is on another branch; config/controller.yaml comes with it')
    assert (ROOT / 'config' / 'controller.yaml').is_file()


def test_restart_policy_controller_outlives_policy():
    for name in ('sim', 'robot', 'serve'):
        chosen = profile(name)
        assert chosen.node('policy').restart is Restart.ON_FAILURE
        assert not chosen.node('policy').essential
        assert chosen.node('controller').essential
        if name != 'sim':
            assert chosen.node('controller').restart is Restart.NEVER, 'no restart on real arms'
        assert 'hold' in chosen.node('controller').stop_services
    record = profile('record')
    assert record.node('recorder').stop_rank < min(
        n.stop_rank for n in record.nodes if n.key != 'recorder'
    ), 'the recorder must close its bag before the others stop'


def test_environment_names_the_fast_dds_profile(monkeypatch):
    environment = profile('sim').environment({})
    for key in ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE'):
        assert Path(environment[key]).is_file()
    assert environment['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    mine = profile('sim').environment({'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET'})
    assert 'ROS_AUTOMATIC_DISCOVERY_RANGE' not in mine, 'a user setting must win'


def test_unknown_profile_names_the_choices():
    with pytest.raises(KeyError, match='sim'):
        profile('simulation')


def test_supervised_command_matches_the_launch_arguments(tmp_path):
    spec = profile('robot').node('cam_high')
    arguments = launch_builder.node_arguments(spec)
    command = make_process(spec, spec.parameters(), str(tmp_path / 'x.log')).command()
    assert command[1:3] == ['-m', 'halo_ros.nodes.camera_node']
    files = [command[i + 1] for i, a in enumerate(command) if a == '--params-file']
    assert files == arguments['parameters'][:-1]
    remaps = [command[i + 1] for i, a in enumerate(command) if a == '-r']
    assert '__node:=cam_high' in remaps
    for source, target in arguments['remappings']:
        assert f'{source}:={target}' in remaps
    assert arguments['respawn'] is True and arguments['name'] == 'cam_high'


class _Recorder:
    """Stands in for a launch action class: keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _fake_launch(monkeypatch):
    names = {
        'launch': ['LaunchDescription'],
        'launch.actions': [
            'DeclareLaunchArgument',
            'EmitEvent',
            'ExecuteProcess',
            'RegisterEventHandler',
            'SetEnvironmentVariable',
            'TimerAction',
        ],
        'launch.event_handlers': ['OnProcessExit'],
        'launch.events': ['Shutdown'],
        'launch.substitutions': ['LaunchConfiguration'],
        'launch_ros': [],
        'launch_ros.actions': ['Node'],
    }
    for module_name, classes in names.items():
        module = types.ModuleType(module_name)
        for cls in classes:
            setattr(module, cls, type(cls, (_Recorder,), {}))
        monkeypatch.setitem(sys.modules, module_name, module)


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_builds_every_profile_node(path, monkeypatch):
    _fake_launch(monkeypatch)
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), 'exec'), namespace)  # noqa: S102 (our own file)
    description = namespace['generate_launch_description']()
    actions = description.args[0]
    chosen = profile(namespace['PROFILE'])
    delayed = {
        a.kwargs['actions'][0].kwargs['executable']: a.kwargs['period']
        for a in actions
        if type(a).__name__ == 'TimerAction' and type(a.kwargs['actions'][0]).__name__ == 'Node'
    }
    nodes = [
        a.kwargs['actions'][0] if type(a).__name__ == 'TimerAction' else a
        for a in actions
        if type(a).__name__ == 'Node'
        or (type(a).__name__ == 'TimerAction' and type(a.kwargs['actions'][0]).__name__ == 'Node')
    ]
    assert [n.kwargs['executable'] for n in nodes] == [s.executable for s in chosen.nodes]
    for spec in chosen.nodes:  # staged start: after every node it waits for
        if spec.start_after:
            later = delayed[spec.executable]
            assert all(later > delayed.get(chosen.node(k).executable, 0) for k in spec.start_after)
    env = {a.args[0]: a.args[1] for a in actions if type(a).__name__ == 'SetEnvironmentVariable'}
    assert env.get('FASTRTPS_DEFAULT_PROFILES_FILE', 'set by the user').endswith(
        ('fastdds.xml', 'set by the user')
    )
    declared = [a.args[0] for a in actions if type(a).__name__ == 'DeclareLaunchArgument']
    assert declared == ['calibration'], 'the calibration file must be a launch argument'
    controller = next(n for n in nodes if n.kwargs['executable'] == 'controller_node')
    assert (
        type(controller.kwargs['parameters'][-1]['calibration']).__name__ == 'LaunchConfiguration'
    )
    shutdowns = [a for a in actions if type(a).__name__ == 'RegisterEventHandler']
    assert len(shutdowns) == sum(s.essential for s in chosen.nodes)
