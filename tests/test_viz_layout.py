"""The shipped Foxglove layout: whole, and on topics both a recorded bag and the live graph have."""

import json
import re

from halo_ros.recording import topics as T
from halo_ros.recording.topics import COMMAND_JOINT_NAMES, arm_joint_names
from halo_ros.viz.view import layout_path

PANELS = {'Image', 'Plot', 'RawMessages', 'StateTransitions', 'DiagnosticSummary'}


def _leaves(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    return _leaves(node['first']) + _leaves(node['second'])


def _topic_paths(config) -> list[str]:
    paths = [config.get('topicPath'), config.get('topicToRender')]
    paths.append(config.get('imageMode', {}).get('imageTopic'))
    paths += [p['value'] for p in config.get('paths', [])]
    return [p for p in paths if p]


def test_layout_panels_are_all_placed_and_of_known_types():
    layout = json.loads(layout_path().read_text())
    placed = _leaves(layout['layout'])
    assert sorted(placed) == sorted(layout['configById']), 'every panel placed exactly once'
    assert {panel.split('!')[0] for panel in placed} == PANELS
    images = {layout['configById'][p]['imageMode']['imageTopic'] for p in placed if 'Image!' in p}
    assert images == {'/' + T.image_topic(c) for c in T.CAMERAS} | {'/' + T.SUBGOAL_IMAGE_TOPIC}


def test_layout_reads_only_recorded_topics_at_valid_indices():
    """The recorder records these names (so the layout opens an episode bag) and the bridge
    advertises the graph's own names (so it opens the live graph)."""
    layout = json.loads(layout_path().read_text())
    recorded = {'/' + t.name for t in T.DEFAULT_TOPICS}
    sizes = {'/' + T.COMMAND_TOPIC: len(COMMAND_JOINT_NAMES)}
    sizes |= {'/' + T.joint_state_topic(a): len(arm_joint_names('left')) for a in T.FOLLOWERS}
    for config in layout['configById'].values():
        for path in _topic_paths(config):
            topic = re.match(r'(/[\w/]+?)(\.|$)', path).group(1)
            assert topic in recorded, f'{path}: {topic} is not recorded'
            index = re.search(r'\.position\[(\d+)\]', path)
            if index:
                assert int(index.group(1)) < sizes[topic], path
