"""The static graphs: layout, equality with the segment-by-segment model, ONNX parity."""

import json

import numpy as np
import pytest
import torch
from engine_support import exported, shapes, tiny

from halo_ros.engine.graphs import (
    GRAPH_NAMES,
    GRAPHS,
    RTC_GRAPH,
    build_graph,
    cast_model,
    example_inputs,
)
from halo_ros.engine.layout import PrefixLayout, PrefixTooLongError, assemble
from halo_ros.engine.onnx_export import MANIFEST, OPSET, manifest_shapes
from halo_ros.model.preprocess import vit_image
from halo_ros.model.segments import LatentSegment, TextSegment, ViTImageSegment

ort = pytest.importorskip('onnxruntime', reason='onnxruntime not installed')


def _prefix_feed(model, layout, texts, latents):
    st = model.cfg.special_tokens
    return assemble(layout, texts, im_start=st.im_start, im_end=st.im_end, latents=latents)


@pytest.mark.parametrize('with_latents', [True, False])
def test_static_prefill_equals_segment_by_segment_prefill(with_latents):
    model, layout = tiny(), shapes().layout
    rng = np.random.default_rng(1)
    frames = [
        vit_image(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), 224, 112, 14)
        for _ in range(layout.cameras)
    ]
    texts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    latents = torch.randn(layout.latent_tokens, 64, generator=torch.Generator().manual_seed(2))
    segments = [ViTImageSegment(f) for f in frames] + [TextSegment(tuple(t)) for t in texts]
    if with_latents:
        segments.append(LatentSegment(latents, layout.latent_grid))
    feed = _prefix_feed(model, layout, texts, with_latents)
    with torch.no_grad():
        ref = model.prefill(segments)
        patches = torch.stack([model.vit_tokens(f)[0] for f in frames])
        vit = build_graph('vit', model, shapes())(patches)
        k, v = build_graph('prefill', model, shapes())(
            vit,
            torch.from_numpy(feed.text_ids),
            latents,
            torch.from_numpy(feed.segment),
            torch.from_numpy(feed.causal),
            torch.from_numpy(feed.positions),
        )
    valid = torch.from_numpy(feed.key_valid)
    assert feed.next_rope == ref.next_rope
    assert int(valid.sum()) == ref.length  # the real rows, in order, padding dropped
    torch.testing.assert_close(k[:, valid], ref.k, rtol=0, atol=1e-5)
    torch.testing.assert_close(v[:, valid], ref.v, rtol=0, atol=1e-5)


def test_layout_rejects_text_longer_than_its_region():
    layout = PrefixLayout.for_model(tiny().cfg, cameras=1, image_hw=(240, 320), text_capacity=8)
    with pytest.raises(
        PrefixTooLongError, match='12 framed tokens exceed the layout text_capacity 8'
    ):
        _prefix_feed(tiny(), layout, [[1] * 5, [2] * 3], False)


def test_manifest_records_shapes_dtypes_opset_and_hash():
    folder = exported()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest['opset'] == OPSET and manifest['model_hash'] == 'tiny-test'
    assert set(manifest['graphs']) == {*GRAPH_NAMES, RTC_GRAPH}
    assert manifest_shapes(manifest) == shapes()
    action = manifest['graphs']['action_step']
    p = shapes().layout.prefix_rows
    assert action['inputs'][0] == {'name': 'x_t', 'shape': [16, 14], 'dtype': 'float32'}
    assert action['inputs'][2] == {'name': 'k', 'shape': [2, p, 2, 32], 'dtype': 'float32'}
    assert action['outputs'] == [{'name': 'velocity', 'shape': [16, 14], 'dtype': 'float32'}]
    for name, entry in manifest['graphs'].items():
        session = ort.InferenceSession(
            str(folder / entry['file']), providers=['CPUExecutionProvider']
        )
        assert [i.name for i in session.get_inputs()] == [i['name'] for i in entry['inputs']], name
        assert [list(i.shape) for i in session.get_inputs()] == [
            i['shape'] for i in entry['inputs']
        ], f'{name}: the exported graph is not static'


@pytest.mark.parametrize('name', [*GRAPH_NAMES, RTC_GRAPH])
def test_exported_graph_matches_torch_on_fresh_inputs(name):
    model, folder = tiny(), exported()
    feeds = example_inputs(name, model, shapes(), seed=12345)  # not the export's inputs
    session = ort.InferenceSession(str(folder / f'{name}.onnx'), providers=['CPUExecutionProvider'])
    outputs = session.run(None, {n: t.numpy() for n, t in feeds.items()})
    module = build_graph(name, model, shapes())
    with torch.enable_grad() if name == RTC_GRAPH else torch.no_grad():
        ref = module(*(feeds[n] for n in GRAPHS[name][1]))
    ref = ref if isinstance(ref, tuple) else (ref,)
    for out_name, got, want in zip(GRAPHS[name][2], outputs, ref, strict=True):
        want = want.detach().numpy()
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel <= 1e-4, f'{name}.{out_name}: relative error {rel:.2e}'


def test_rtc_graph_is_the_guided_velocity_of_the_runtime():
    """The fused graph computes what `RtcGuidance` computes with autograd around action_step."""
    from halo_ros.runtime.guidance import RtcGuidance, guidance_weight

    model = tiny()
    feeds = example_inputs(RTC_GRAPH, model, shapes(), seed=7)
    feeds['t'] = torch.full_like(feeds['t'], 0.6)  # RTC runs without an executed prefix
    feeds['guidance'] = torch.tensor(guidance_weight(0.6, 10.0))
    session = ort.InferenceSession(
        str(exported() / f'{RTC_GRAPH}.onnx'), providers=['CPUExecutionProvider']
    )
    (got,) = session.run(None, {n: t.numpy() for n, t in feeds.items()})
    guidance = RtcGuidance(feeds['target'], feeds['weights'], max_weight=10.0)

    def velocity(x):
        return model.action_velocity(
            x, feeds['t'], feeds['k'], feeds['v'], feeds['key_valid'], feeds['rope']
        )

    want = guidance.velocity(feeds['x_t'], 0.6, 0, velocity)
    plain = velocity(feeds['x_t']).detach()
    assert (want - plain).abs().max() > 1e-3  # the guidance moved it
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4 * np.abs(want.numpy()).max())


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_reduced_precision_action_step_error(dtype, record_property):
    """Reported, not held to 1e-4: bf16/fp16 weights and K/V with fp32 flow states."""
    model = tiny()
    low = build_graph('action_step', cast_model(model, dtype), shapes())
    feeds = example_inputs('action_step', model, shapes(), seed=3)
    with torch.no_grad():
        want = build_graph('action_step', model, shapes())(**feeds)
        got = low(**{n: t.to(dtype) if n in ('k', 'v') else t for n, t in feeds.items()})
    assert got.dtype == torch.float32  # outputs stay fp32
    rel = float((got - want).abs().max() / want.abs().max())
    record_property(f'action_step_{dtype}_rel_err', rel)
    print(f'action_step {dtype}: relative error {rel:.2e} vs fp32')
    assert rel < 0.05


@pytest.fixture(scope='module')
def fp16_export(tmp_path_factory):
    """The act path (vit, prefill, action_step) exported with fp16 weights and K/V."""
    from halo_ros.engine.graphs import Precision
    from halo_ros.engine.onnx_export import export_all

    folder = tmp_path_factory.mktemp('fp16')
    precision = dict.fromkeys(GRAPH_NAMES, Precision.FP16)
    export_all(
        tiny(),
        shapes(),
        folder,
        model_name='halo-tiny',
        model_hash='tiny-test',
        precision=precision,
        graphs=('vit', 'prefill', 'action_step'),
    )
    return folder


def test_reduced_precision_export_keeps_fp32_flow_io(fp16_export):
    from halo_ros.engine.onnx_export import read_manifest

    entry = read_manifest(fp16_export)['graphs']['action_step']
    dtypes = {i['name']: i['dtype'] for i in entry['inputs'] + entry['outputs']}
    assert entry['precision'] == 'fp16'
    assert dtypes['k'] == dtypes['v'] == 'float16'  # K/V in the graph's precision
    assert dtypes['x_t'] == dtypes['t'] == dtypes['velocity'] == 'float32'  # flow stays fp32


def test_reduced_precision_ort_act_error(fp16_export, record_property):
    """fp16 graphs on ONNX Runtime CPU against the fp32 eager reference: reported, loosely
    bounded. (bf16 graphs export too, but ORT has no bf16 CPU kernels: GPU / TensorRT only.)"""
    from engine_support import eager_engine, graph_engine, noise, observation

    from halo_ros.engine.ort_runner import OrtRunner

    engine = graph_engine(OrtRunner(fp16_export, threads=1))
    got = engine.act(observation(), None, noise()).actions
    want = eager_engine().act(observation(), None, noise()).actions
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    record_property('ort_fp16_act_rel_err', rel)
    print(f'onnxruntime fp16 act: relative error {rel:.2e} vs fp32 eager')
    assert rel < 2e-2
