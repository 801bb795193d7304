"""Observation assembly: complete, fresh and consistent observations pass; anything else is
dropped and counted by reason. Also the chunk tag that carries epoch/seq/context version."""

import numpy as np
import pytest

from halo_ros.joints import BIMANUAL_JOINTS, arm_joint_names
from halo_ros.runtime.chunk import ChunkTag
from halo_ros.runtime.observation import AssemblyConfig, ObservationAssembler, PolicyDropReason

MS = 1_000_000
HW = (6, 8)
CAMERAS = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')


def _assembler(**kwargs):
    config = AssemblyConfig(image_hw=HW, max_skew_ms=30, max_age_ms=100, **kwargs)
    return ObservationAssembler(config)


def _frames(assembler, stamp_ns, *, skip=()):
    for camera in CAMERAS:
        if camera not in skip:
            frame = np.full((*HW, 3), 7, np.uint8)
            assert assembler.add_image(camera, frame, stamp_ns)


def test_follower_topics_assemble_into_the_14_vector():
    a = _assembler()
    _frames(a, 1000 * MS)
    a.add_joints(arm_joint_names('follower_right'), np.arange(7) + 10.0, 995 * MS)
    assert a.assemble(1010 * MS) is None  # left arm not there yet: waiting, not a drop
    _frames(a, 1040 * MS)
    # names in another order than the layout: mapped by name
    a.add_joints(reversed(arm_joint_names('follower_left')), np.arange(7)[::-1], 1041 * MS)
    a.add_joints(arm_joint_names('follower_right'), np.arange(7) + 10.0, 1042 * MS)
    observation = a.assemble(1060 * MS)
    assert observation.stamp_ns == 1040 * MS
    np.testing.assert_array_equal(observation.state, np.r_[np.arange(7), np.arange(7) + 10])
    assert a.assemble(1070 * MS) is None  # nothing new since
    assert a.assemble(1070 * MS, after_ns=0) is None
    assert a.drops.counts() == {}


def test_one_14_joint_topic_also_works():
    a = _assembler()
    _frames(a, 500 * MS)
    assert a.add_joints(BIMANUAL_JOINTS, np.linspace(0, 1, 14), 501 * MS)
    assert a.assemble(510 * MS).state.shape == (14,)


def test_the_joint_sample_nearest_the_frames_is_used():
    a = _assembler()
    for i in range(10):
        a.add_joints(BIMANUAL_JOINTS, np.full(14, float(i)), (1000 + 20 * i) * MS)
    _frames(a, 1061 * MS)
    assert a.assemble(1100 * MS).state[0] == 3.0  # 1060 ms is nearest to 1061 ms


@pytest.mark.parametrize(
    ('feed', 'reason'),
    [
        (
            lambda a: a.add_image('cam_high', np.zeros((6, 9, 3), np.uint8), 0),
            PolicyDropReason.SHAPE,
        ),
        (
            lambda a: a.add_image('cam_high', np.zeros((*HW, 3), np.float32), 0),
            PolicyDropReason.SHAPE,
        ),
        (lambda a: a.add_joints(BIMANUAL_JOINTS, [0.0] * 13, 0), PolicyDropReason.SHAPE),
        (
            lambda a: a.add_joints(BIMANUAL_JOINTS, [np.nan] + [0.0] * 13, 0),
            PolicyDropReason.NON_FINITE,
        ),
        (lambda a: a.add_joints(BIMANUAL_JOINTS[:6], [0.0] * 6, 0), PolicyDropReason.JOINT_NAMES),
        (
            lambda a: a.add_joints([f'j{i}' for i in range(7)], [0.0] * 7, 0),
            PolicyDropReason.JOINT_NAMES,
        ),
    ],
)
def test_bad_input_is_rejected_and_counted(feed, reason):
    a = _assembler()
    assert feed(a) is False
    assert a.drops.counts() == {reason.value: 1}


def test_stale_and_skewed_observations_are_dropped_once_per_frame_set():
    a = _assembler()
    a.add_joints(BIMANUAL_JOINTS, np.zeros(14), 1000 * MS)
    _frames(a, 1000 * MS)
    assert a.assemble(1200 * MS) is None  # 200 ms old > 100 ms
    assert a.assemble(1210 * MS) is None  # same frames: not counted again
    assert a.drops[PolicyDropReason.STALE] == 1

    _frames(a, 1300 * MS, skip=('cam_high',))  # cam_high still at 1000 ms: 300 ms apart
    assert a.assemble(1310 * MS) is None
    assert a.drops[PolicyDropReason.SKEW] == 0  # cam_high's frame may still be on its way
    assert a.assemble(1340 * MS) is None  # it had max_skew (30 ms) to arrive: a drop
    assert a.drops[PolicyDropReason.SKEW] == 1

    _frames(a, 1400 * MS)  # cameras agree, but the newest joint sample is 400 ms older
    assert a.assemble(1410 * MS) is None
    assert a.drops.counts() == {'stale': 1, 'skew': 2}


def test_chunk_tag_round_trip_and_errors():
    tag = ChunkTag(epoch=3, seq=41, context_version=7, delay_steps=2)
    assert tag.format() == 'halo:epoch=3;seq=41;ctx=7;d=2'
    assert ChunkTag.parse(tag.format()) == tag
    assert ChunkTag.parse('halo:epoch=1;seq=2;ctx=-1;future=x') == ChunkTag(1, 2, -1, 0)
    for bad in ('', 'map', 'halo:epoch=1;seq=2', 'halo:epoch=a;seq=2;ctx=3', 'halo:epoch'):
        with pytest.raises(ValueError, match='chunk tag'):
            ChunkTag.parse(bad)
