"""Backends agree: OrtEngine and the static torch engine against the eager TorchEngine."""

import dataclasses

import numpy as np
import pytest
from engine_support import (
    eager_engine,
    exported,
    graph_engine,
    noise,
    observation,
    tiny,
)

from halo_ros.engine.interface import EngineInputError, GuidanceUnsupportedError, Observation
from halo_ros.engine.runner import TorchRunner
from halo_ros.runtime.seam import SeamMode, SeamPlan, plan_seam

pytest.importorskip('onnxruntime', reason='onnxruntime not installed')

from halo_ros.engine.ort_runner import OrtRunner  # noqa: E402


@pytest.fixture(scope='module')
def engines():
    from engine_support import shapes

    ort_engine = graph_engine(OrtRunner(exported(), threads=1))
    torch_engine = graph_engine(TorchRunner(tiny(), shapes()))
    return eager_engine(), torch_engine, ort_engine


@pytest.fixture(scope='module')
def reasoning(engines):
    return engines[0].reason(observation(), 'hand over the cube', 3, max_tokens=6)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_reason_agrees_across_backends(engines, reasoning):
    _, torch_engine, ort_engine = engines
    for engine in (torch_engine, ort_engine):
        got = engine.reason(observation(), 'hand over the cube', 3, max_tokens=6)
        assert got.text == reasoning.text, engine.info.backend
        assert got.subgoal_grid == reasoning.subgoal_grid
        assert _rel(got.subgoal_tokens, reasoning.subgoal_tokens) <= 1e-4
        assert np.abs(got.subgoal_image.astype(int) - reasoning.subgoal_image).max() <= 1
        assert {'prefill', 'decode', 'subgoal', 'vae_decode', 'total'} <= set(got.timings_ms)


@pytest.mark.parametrize('with_reasoning', [True, False])
def test_act_agrees_across_backends(engines, reasoning, with_reasoning):
    eager, torch_engine, ort_engine = engines
    r = reasoning if with_reasoning else None
    want = eager.act(observation(), r, noise()).actions
    assert np.abs(want - noise()).max() > 1e-2  # the model moved the noise
    for engine in (torch_engine, ort_engine):
        got = engine.act(observation(), r, noise())
        assert got.actions.shape == (16, 14) and got.actions.dtype == np.float32
        assert _rel(got.actions, want) <= 1e-4, engine.info.backend
        assert {'vit', 'prefill', 'flow', 'total'} <= set(got.timings_ms)


def _seam(mode: SeamMode, reference: np.ndarray, delay: int = 4) -> SeamPlan:
    """A seam towards a tail that differs from the free chunk, so following it shows."""
    return plan_seam(mode, reference[2:12] + 0.3, 16, delay, 6)


def test_guided_act_uses_the_vjp_graph_and_agrees(engines, reasoning):
    eager, torch_engine, ort_engine = engines
    assert ort_engine.info.supports_guidance_gradients
    plain = eager.act(observation(), reasoning, noise()).actions
    seam = _seam(SeamMode.RTC, plain)
    want = eager.act(observation(), reasoning, noise(), seam).actions
    assert np.abs(want - plain).max() > 1e-3  # the guidance changed the chunk
    for engine in (torch_engine, ort_engine):
        got = engine.act(observation(), reasoning, noise(), seam).actions
        assert _rel(got, want) <= 1e-4, engine.info.backend


def test_prefix_seam_keeps_the_executed_prefix_on_every_backend(engines, reasoning):
    """Training-time RTC at inference: the first d actions are the old chunk's, exactly, and
    the rest is sampled conditioned on them (per-row flow times through the exported graph)."""
    eager, torch_engine, ort_engine = engines
    plain = eager.act(observation(), reasoning, noise()).actions
    seam = _seam(SeamMode.PREFIX, plain, delay=5)
    want = eager.act(observation(), reasoning, noise(), seam).actions
    np.testing.assert_array_equal(want[:5], seam.target[:5])
    assert np.abs(want[5:] - plain[5:]).max() > 1e-4  # the prefix conditions the rest
    for engine in (torch_engine, ort_engine):
        got = engine.act(observation(), reasoning, noise(), seam).actions
        np.testing.assert_array_equal(got[:5], seam.target[:5])
        assert _rel(got, want) <= 1e-4, engine.info.backend


def test_backend_without_vjp_refuses_guidance(tmp_path, reasoning):
    import shutil

    from halo_ros.engine.graphs import RTC_GRAPH
    from halo_ros.engine.onnx_export import MANIFEST, read_manifest

    folder = tmp_path / 'nortc'
    shutil.copytree(exported(), folder)
    manifest = read_manifest(folder)
    del manifest['graphs'][RTC_GRAPH]
    (folder / MANIFEST).write_text(__import__('json').dumps(manifest))
    engine = graph_engine(OrtRunner(folder, threads=1))
    assert not engine.info.supports_guidance_gradients
    with pytest.raises(GuidanceUnsupportedError, match='cannot differentiate'):
        engine.act(observation(), reasoning, noise(), _seam(SeamMode.RTC, noise()))
    engine.act(observation(), reasoning, noise(), _seam(SeamMode.PREFIX, noise()))  # no gradient
    engine.act(observation(), reasoning, noise())  # unguided still works


def _with_image(name, image):
    obs = observation()
    return dataclasses.replace(obs, images={**obs.images, name: image})


BAD_INPUTS = [
    (
        'wrong image shape',
        lambda: _with_image('cam_high', np.zeros((120, 320, 3), np.uint8)),
        None,
        "observation.images\\['cam_high'\\]: expected shape",
    ),
    (
        'wrong image dtype',
        lambda: _with_image('cam_left_wrist', np.zeros((240, 320, 3), np.float32)),
        None,
        "observation.images\\['cam_left_wrist'\\]: expected dtype uint8",
    ),
    (
        'missing camera',
        lambda: Observation(
            0, {'cam_high': observation().images['cam_high']}, np.zeros(14, np.float32)
        ),
        None,
        'observation.images: missing cameras',
    ),
    ('noise shape', observation, np.zeros((15, 14), np.float32), 'noise: expected shape'),
    ('noise dtype', observation, np.zeros((16, 14), np.float64), 'noise: expected dtype float32'),
    ('noise NaN', observation, np.full((16, 14), np.nan, np.float32), 'noise: contains NaN'),
]


@pytest.mark.parametrize('backend', [1, 2], ids=['torch', 'onnxruntime'])
@pytest.mark.parametrize(
    ('case', 'make_obs', 'bad_noise', 'message'), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_engine_rejects_bad_inputs_naming_them(
    engines, backend, case, make_obs, bad_noise, message
):
    engine = engines[backend]
    with pytest.raises(EngineInputError, match=message):
        engine.act(make_obs(), None, noise() if bad_noise is None else bad_noise)


@pytest.mark.parametrize('backend', [1, 2], ids=['torch', 'onnxruntime'])
def test_engine_rejects_bad_reasoning_inputs(engines, reasoning, backend):
    engine = engines[backend]
    wrong = dataclasses.replace(reasoning, subgoal_tokens=reasoning.subgoal_tokens[:-1])
    with pytest.raises(EngineInputError, match='reasoning.subgoal_tokens: expected shape'):
        engine.act(observation(), wrong, noise())
    wrong = dataclasses.replace(reasoning, subgoal_grid=(3, 4))
    with pytest.raises(EngineInputError, match='reasoning.subgoal_grid'):
        engine.act(observation(), wrong, noise())
    wrong = dataclasses.replace(reasoning, text='word ' * 80)
    with pytest.raises(EngineInputError, match='reasoning.text: prefix text'):
        engine.act(observation(), wrong, noise())
    with pytest.raises(EngineInputError, match='max_tokens'):
        engine.reason(observation(), 'x', 1, max_tokens=13)


def test_ort_runner_checks_graph_inputs_by_name(engines):
    runner = engines[2].runner
    from engine_support import shapes

    from halo_ros.engine.graphs import example_inputs

    feeds = example_inputs('action_step', tiny(), shapes())
    with pytest.raises(EngineInputError, match='action_step.x_t: expected dtype float32'):
        runner.run('action_step', feeds | {'x_t': feeds['x_t'].double()})
    with pytest.raises(EngineInputError, match=r'action_step.k: expected shape \(2, '):
        runner.run('action_step', feeds | {'k': feeds['k'][:, :-1]})
    with pytest.raises(EngineInputError, match='action_step.rope: missing input'):
        runner.run('action_step', {n: t for n, t in feeds.items() if n != 'rope'})


def _config(**kw):
    from engine_support import CAMERAS, CHUNK, IMAGE_HW

    from halo_ros.engine.loading import EngineConfig

    return EngineConfig(
        cameras=CAMERAS,
        image_hw=IMAGE_HW,
        chunk_length=CHUNK,
        text_capacity=64,
        decode_capacity=12,
        **kw,
    )


def test_load_engine_selects_onnxruntime_and_checks_the_export(tmp_path):
    import json
    import shutil

    from halo_ros.engine.loading import load_engine, model_digest

    folder = tmp_path / 'onnx'
    shutil.copytree(exported(), folder)
    config = _config(backend='onnxruntime', onnx_dir=str(folder), threads=1)
    with pytest.raises(ValueError, match='exported for model hash tiny-test'):
        load_engine(config)
    manifest = json.loads((folder / 'manifest.json').read_text())
    manifest['model_hash'] = model_digest(config)[:16]
    (folder / 'manifest.json').write_text(json.dumps(manifest))
    engine = load_engine(config)
    assert engine.info.backend == 'onnxruntime' and engine.info.supports_guidance_gradients
    assert engine.act(observation(), None, noise()).actions.shape == (16, 14)
    with pytest.raises(ValueError, match='this config needs'):
        load_engine(dataclasses.replace(config, chunk_length=8))


def test_load_engine_torch_static_and_eager():
    from halo_ros.engine.graph_engine import GraphEngine
    from halo_ros.engine.loading import load_engine
    from halo_ros.engine.torch_engine import TorchEngine

    assert isinstance(load_engine(_config(eager=False)), GraphEngine)
    assert isinstance(load_engine(_config(eager=True)), TorchEngine)
    assert isinstance(load_engine(_config()), TorchEngine), 'eager is the CPU default'
    with pytest.raises(ValueError, match="precision 'int4'"):
        _config(precision='int4')


def test_export_command_writes_graphs_and_manifest(tmp_path):
    from halo_ros.cli import main
    from halo_ros.engine.onnx_export import read_manifest

    out = tmp_path / 'export'
    argv = [
        'export',
        '--cameras',
        '1',
        '--chunk-length',
        '8',
        '--text-capacity',
        '48',
        '--out',
        str(out),
        '--graphs',
        'action_step',
        'vae_decode',
        '--exporter',
        'torchscript',
    ]
    assert main(argv) == 0
    manifest = read_manifest(out)
    assert set(manifest['graphs']) == {'action_step', 'vae_decode'}
    assert (out / 'action_step.onnx').is_file()
    assert manifest['graphs']['action_step']['inputs'][0]['shape'] == [8, 14]
    assert manifest['graphs']['action_step']['exporter'] == 'torchscript'


@pytest.mark.parametrize('backend', [1, 2], ids=['torch', 'onnxruntime'])
def test_act_and_reason_run_concurrently(engines, reasoning, backend):
    """The runtime calls act (fast loop) and reason (slow loop) from two threads."""
    from concurrent.futures import ThreadPoolExecutor

    engine = engines[backend]
    want_actions = engine.act(observation(), reasoning, noise()).actions
    want_text = engine.reason(observation(), 'hand over the cube', 3, max_tokens=6).text
    with ThreadPoolExecutor(2) as pool:
        reason = pool.submit(engine.reason, observation(), 'hand over the cube', 3, max_tokens=6)
        acts = [pool.submit(engine.act, observation(), reasoning, noise()) for _ in range(3)]
        assert reason.result(timeout=120).text == want_text
        for act in acts:
            np.testing.assert_array_equal(act.result(timeout=120).actions, want_actions)


def test_torch_runner_in_bf16_runs_act_and_reason(reasoning, record_property):
    """GPU precision (bf16 weights and K/V, fp32 flow) on the CPU: the dtype plumbing holds and
    the error against fp32 is reported."""
    from engine_support import shapes

    from halo_ros.engine.graphs import GPU_PRECISION

    engine = graph_engine(TorchRunner(tiny(), shapes(), precision=GPU_PRECISION))
    got = engine.act(observation(), reasoning, noise())
    assert got.actions.dtype == np.float32
    want = eager_engine().act(observation(), reasoning, noise()).actions
    rel = _rel(got.actions, want)
    record_property('torch_bf16_act_rel_err', rel)
    assert rel < 5e-2
    cycle = engine.reason(observation(), 'hand over the cube', 3, max_tokens=4)
    assert cycle.subgoal_tokens.dtype == np.float32 and cycle.subgoal_image.dtype == np.uint8
