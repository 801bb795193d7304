"""The two loops together: reasoning never holds up chunks, instruction changes bump the epoch
(older chunks and reasoning discarded, the next chunk follows the new instruction at once)."""

import threading
import time

import numpy as np
import pytest

from halo_ros.engine.interface import ActionResult, Engine, EngineInfo, Observation, Reasoning
from halo_ros.joints import BIMANUAL_JOINTS
from halo_ros.runtime.actor import Actor, ActorConfig
from halo_ros.runtime.context import ContextStore
from halo_ros.runtime.feedback import ChunkSchedule
from halo_ros.runtime.observation import AssemblyConfig, PolicyDropCounter, PolicyDropReason
from halo_ros.runtime.policy import PolicyConfig, PolicyRuntime
from halo_ros.runtime.reasoner import Reasoner
from halo_ros.runtime.seam import SeamMode

H = 8
CAMERAS = ('cam_high',)


class ScriptedEngine(Engine):
    """Instant actions; reasoning can be held open; hooks run inside act/reason."""

    def __init__(self):
        self.acted_with: list[Reasoning | None] = []
        self.during_act = None
        self.during_reason = None
        self.release_reasoning = threading.Event()
        self.release_reasoning.set()
        self.reasoning_started = threading.Event()

    @property
    def info(self):
        return EngineInfo('scripted', 'scripted', '0', 14, H, 1, CAMERAS, (4, 4), False)

    def act(self, observation, reasoning, noise, seam=None):
        self.acted_with.append(reasoning)
        if self.during_act is not None:
            self.during_act()
        return ActionResult(np.zeros((H, 14), np.float32), {'total': 0.1})

    def reason(self, observation, instruction, version, *, subgoal=True, max_tokens=64):
        self.reasoning_started.set()
        assert self.release_reasoning.wait(30), 'the test never released the reasoning cycle'
        if self.during_reason is not None:
            self.during_reason()
        return Reasoning(version, instruction, f'<|plan|>plan {version}', plan=f'plan {version}')


def _observations():
    stamp = [0]

    def observe(now_ns, after_ns):
        stamp[0] += 1
        return Observation(stamp[0], {}, np.zeros(14, np.float32))

    return observe


def test_instruction_change_bumps_the_epoch_and_the_next_chunk_follows_it():
    engine = ScriptedEngine()
    context = ContextStore('pick up the cube')
    drops = PolicyDropCounter()
    chunks = []
    actor = Actor(
        engine,
        context,
        _observations(),
        ChunkSchedule(20_000_000),
        config=ActorConfig(seam=SeamMode.NONE),
        drops=drops,
        on_chunk=lambda c, ns: chunks.append(c),
    )
    first = actor.step()
    assert first.tag.epoch == 1 and engine.acted_with[-1].instruction == 'pick up the cube'

    # The instruction changes while a chunk is being computed: that chunk is discarded.
    engine.during_act = lambda: context.set_instruction('put it down')
    assert actor.step() is None
    assert drops[PolicyDropReason.EPOCH] == 1
    engine.during_act = None

    second = actor.step()  # no waiting for reasoning: the new instruction, no old plan
    assert second.tag.epoch == 2 and second.tag.seq == first.tag.seq + 1
    assert second.tag.context_version > first.tag.context_version
    used = engine.acted_with[-1]
    assert used.instruction == 'put it down' and used.text == ''
    assert [c.tag.epoch for c in chunks] == [1, 2]

    # Downstream, a late chunk of the old epoch is discarded once the new one was seen.
    schedule = ChunkSchedule(20_000_000)
    assert schedule.record(second, received_ns=10)
    assert not schedule.record(first, received_ns=20)


def test_rtc_needs_an_engine_with_guidance_gradients():
    with pytest.raises(ValueError, match='scripted backend'):
        Actor(
            ScriptedEngine(),
            ContextStore(),
            _observations(),
            ChunkSchedule(1),
            config=ActorConfig(seam=SeamMode.RTC),
        )


def test_reasoning_for_a_superseded_instruction_is_discarded():
    engine = ScriptedEngine()
    context = ContextStore('stack the cups')
    results = []
    observation = Observation(5, {}, np.zeros(14, np.float32))
    reasoner = Reasoner(
        engine,
        context,
        lambda: observation,
        on_reasoning=lambda r, accepted: results.append((r, accepted)),
    )
    accepted = reasoner.cycle()
    assert results[-1][1] and context.snapshot().reasoning is accepted
    engine.during_reason = lambda: context.set_instruction('wipe the table')
    stale = reasoner.cycle()
    assert results[-1] == (stale, False)
    snapshot = context.snapshot()
    assert snapshot.instruction == 'wipe the table' and snapshot.reasoning.text == ''
    assert snapshot.version > stale.version  # versions only grow
    assert reasoner.drops[PolicyDropReason.EPOCH] == 1


def test_a_reasoning_cycle_that_never_ends_does_not_stop_the_chunks():
    engine = ScriptedEngine()
    engine.release_reasoning.clear()  # every reasoning cycle hangs until released
    arrivals = []
    config = PolicyConfig(
        assembly=AssemblyConfig(cameras=CAMERAS, image_hw=(4, 4), max_age_ms=5000),
        actor=ActorConfig(chunk_period_s=0.02, seam=SeamMode.NONE),
        reasoning_period_s=0.01,
        instruction='fold the towel',
    )
    runtime = PolicyRuntime(engine, config, on_chunk=lambda c: arrivals.append(c))
    frame = np.zeros((4, 4, 3), np.uint8)
    runtime.start()
    try:
        deadline = time.monotonic() + 20
        while len(arrivals) < 15 and time.monotonic() < deadline:
            now = time.time_ns()
            runtime.assembler.add_image('cam_high', frame, now)
            runtime.assembler.add_joints(BIMANUAL_JOINTS, np.zeros(14), now)
            time.sleep(0.01)
        assert engine.reasoning_started.is_set()
        assert len(arrivals) >= 15, f'only {len(arrivals)} chunks while reasoning hung'
        assert runtime.reasoner.busy.is_set()
    finally:
        engine.release_reasoning.set()
        runtime.stop()


@pytest.fixture(scope='module')
def tiny_engine():
    import torch

    from halo_ros.engine.loading import EngineConfig, load_engine

    torch.set_num_threads(1)
    return load_engine(EngineConfig(image_hw=(240, 320)))


def test_halo_tiny_chunks_keep_their_period_while_reasoning_runs(tiny_engine):
    """halo-tiny on the CPU: reasoning cycles (~0.7 s here, text + subgoal) overlap the chunk
    stream, whose cadence stays at the configured period instead of waiting for them."""
    from halo_ros.runtime.async_bench import run_policy

    period = 0.4
    run = run_policy(tiny_engine, seconds=5.0, chunk_period_s=period, reasoning=True)
    spans = np.array([e - s for s, e in run.reason_spans])
    during = run.intervals(during_reasoning=True)
    assert len(spans) >= 2 and len(during) >= 4, (spans, during)
    print(
        f'\nreasoning cycles {np.round(spans, 2)} s; chunk gaps during them {np.round(during, 3)}'
    )
    assert np.median(during) <= 1.25 * period
    assert during.max() <= 2.0 * period  # a blocked actor would wait out a whole cycle


def test_prefix_seam_conditions_on_at_most_the_trained_prefix():
    """With seam prefix the plan's executed prefix is the delay estimate, capped at what the
    checkpoint was trained to continue (`max_prefix_steps` of its card)."""
    engine = ScriptedEngine()
    seams = []
    engine.during_act = None
    real_act = engine.act

    def act(observation, reasoning, noise, seam=None):
        seams.append(seam)
        return real_act(observation, reasoning, noise, seam)

    engine.act = act
    clock = {'ns': 0}
    schedule = ChunkSchedule(20_000_000)

    def observe(now_ns, after_ns):
        return Observation(now_ns, {}, np.zeros(14, np.float32)) if now_ns > after_ns else None

    actor = Actor(
        engine,
        ContextStore('go'),
        observe,
        schedule,
        config=ActorConfig(seam=SeamMode.PREFIX, max_prefix_steps=2, delay_warmup=0),
        clock_ns=lambda: clock['ns'],
        on_chunk=schedule.record,
    )
    for k in range(6):  # every chunk lands 5 ticks (100 ms) after its observation
        clock['ns'] = 1_000_000_000 + k * 100_000_000
        start = clock['ns']
        engine.during_act = lambda start=start: clock.update(ns=start + 100_000_000)
        assert actor.step() is not None
    assert actor.delay.steps() == 5
    planned = [s for s in seams if s is not None]
    assert planned and all(s.mode is SeamMode.PREFIX for s in planned)
    assert max(s.delay_steps for s in planned) == 2


def test_prefix_seam_starts_from_the_executing_action_or_the_held_pose():
    """Even when chunks land at once (d = 0) the new chunk is given the action executing at its
    observation time; the first chunk, with nothing executing, starts from the held pose."""
    engine = ScriptedEngine()
    seams = []
    real_act = engine.act
    engine.act = lambda o, r, n, seam=None: seams.append(seam) or real_act(o, r, n, seam)
    schedule = ChunkSchedule(20_000_000)
    pose = np.linspace(-1, 1, 14).astype(np.float32)
    clock = {'ns': 1_000_000_000}

    def observe(now_ns, after_ns):
        return Observation(now_ns, {}, pose) if now_ns > after_ns else None

    actor = Actor(
        engine,
        ContextStore('go'),
        observe,
        schedule,
        config=ActorConfig(seam=SeamMode.PREFIX, delay_warmup=0),
        clock_ns=lambda: clock['ns'],
        on_chunk=schedule.record,
    )
    actor.step()
    first = seams[0]
    assert first.mode is SeamMode.PREFIX and first.delay_steps == 1
    np.testing.assert_array_equal(first.prefix, pose[None])
    clock['ns'] += 60_000_000  # three ticks later, chunks still landing at once
    actor.step()
    assert seams[1].delay_steps == 1 and actor.delay.steps() == 0
    np.testing.assert_array_equal(seams[1].prefix[0], np.zeros(14))  # the scripted chunk's


def test_both_loops_are_paced_by_the_runtime_clock_not_the_wall():
    """Under sim time (here the simulator at a quarter of real time) a 0.1 s chunk period and a
    0.2 s reasoning period are periods of simulated time, as on a computer four times faster:
    paced by the wall, the policy would replan four times as often as it does on the robot."""
    engine = ScriptedEngine()
    reasoned = []
    engine.during_reason = lambda: reasoned.append(1)
    t0 = time.monotonic_ns()

    def sim_ns():
        return 1_000_000_000 + (time.monotonic_ns() - t0) // 4

    chunk_times = []
    config = PolicyConfig(
        assembly=AssemblyConfig(cameras=CAMERAS, image_hw=(4, 4), max_age_ms=5000),
        actor=ActorConfig(chunk_period_s=0.1, seam=SeamMode.NONE),
        reasoning_period_s=0.2,
        instruction='fold the towel',
    )
    runtime = PolicyRuntime(
        engine, config, clock_ns=sim_ns, on_chunk=lambda c: chunk_times.append(sim_ns())
    )
    frame = np.zeros((4, 4, 3), np.uint8)
    runtime.start()
    try:
        wall_end = time.monotonic() + 2.4  # 0.6 s of simulated time
        while time.monotonic() < wall_end:
            now = sim_ns()
            runtime.assembler.add_image('cam_high', frame, now)
            runtime.assembler.add_joints(BIMANUAL_JOINTS, np.zeros(14), now)
            time.sleep(0.01)
    finally:
        runtime.stop()
    gaps = np.diff(chunk_times) / 1e9
    assert 4 <= len(chunk_times) <= 9, chunk_times  # wall pacing: ~24
    assert 0.09 <= np.median(gaps) <= 0.13, gaps
    assert 2 <= len(reasoned) <= 5, len(reasoned)  # wall pacing: ~12


def _runtime_on_a_set_clock(engine, actor: ActorConfig, **policy):
    """A runtime on a clock the test sets, and `observe(t_ns, pose)`: one frame and the joints
    stamped t_ns (the clock moved there), then one actor step; returns its chunk or None."""
    now = [1_000_000_000]
    config = PolicyConfig(
        assembly=AssemblyConfig(cameras=CAMERAS, image_hw=(4, 4), max_age_ms=5000),
        actor=actor,
        instruction='fold the towel',
        **policy,
    )
    runtime = PolicyRuntime(engine, config, clock_ns=lambda: now[0])
    frame = np.zeros((4, 4, 3), np.uint8)

    def observe(t_ns, pose=None):
        now[0] = t_ns
        runtime.assembler.add_image('cam_high', frame, t_ns)
        runtime.assembler.add_joints(BIMANUAL_JOINTS, np.zeros(14) if pose is None else pose, t_ns)
        return runtime.actor.step()

    return runtime, now, observe


def test_the_first_reasoning_of_an_episode_sees_the_new_scene():
    """After a reset the objects are elsewhere: the frame the actor last assembled shows the old
    scene, and a thought made from it (a grounded checkpoint says where the cube is) would send
    the arms to the old place for a whole cycle. Reasoning waits for a frame of the episode."""
    engine = ScriptedEngine()
    seen = []
    engine.reason = lambda observation, *a, **k: (
        seen.append(observation.stamp_ns) or Reasoning(len(seen), 'fold', '<|plan|>p', plan='p')
    )
    runtime, now, observe_at = _runtime_on_a_set_clock(engine, ActorConfig(seam=SeamMode.NONE))
    observe_at(1_000_000_000)
    assert runtime.reasoner.cycle() is not None and seen == [1_000_000_000]
    now[0] = 1_100_000_000
    runtime.new_episode()  # the scene was reset just before
    assert runtime.reasoner.cycle() is None and len(seen) == 1  # only the old frame so far
    observe_at(1_150_000_000)
    assert runtime.reasoner.cycle() is not None and seen[-1] == 1_150_000_000


def test_chunks_count_as_executed_only_while_the_controller_follows_them():
    """While the controller holds (waiting to engage, or after a reset) its arms stand still:
    the chunks published meanwhile must not become the next chunk's executed prefix, or each
    one continues a plan nobody followed and the chain drifts; on engagement the newest chunk
    executes, and a new episode forgets what the last one executed."""
    engine = ScriptedEngine()
    seams = []
    real_act = engine.act
    engine.act = lambda o, r, n, seam=None: seams.append(seam) or real_act(o, r, n, seam)
    pose = np.linspace(-1, 1, 14).astype(np.float32)
    runtime, now, observe = _runtime_on_a_set_clock(
        engine, ActorConfig(seam=SeamMode.PREFIX, delay_warmup=0), reasoning=False
    )

    def chunk_at(t_ns):
        assert observe(t_ns, pose) is not None
        return seams[-1].prefix

    runtime.controller_mode('HOLD')
    chunk_at(1_000_000_000)
    np.testing.assert_array_equal(chunk_at(1_200_000_000), pose[None])  # held: the pose
    assert runtime.schedule.executing(now[0]) is None
    runtime.controller_mode('POLICY')  # the controller takes up the newest chunk
    assert runtime.schedule.executing(now[0]) is not None
    np.testing.assert_array_equal(chunk_at(1_300_000_000)[0], np.zeros(14))  # the chunk's
    runtime.new_episode()
    assert runtime.schedule.executing(now[0]) is None
    runtime.controller_mode('HOLD')
    np.testing.assert_array_equal(chunk_at(1_600_000_000), pose[None])
