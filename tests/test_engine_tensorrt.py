"""TensorRT and CUDA: what can be checked without them here, and the tests that need them.

No test here pretends to have run TensorRT: the engine build and the CUDA-graph tests are marked
`gpu` and skip unless tensorrt and a CUDA device exist.
"""

import importlib.util

import numpy as np
import pytest
import torch

from halo_ros.engine.trt_runner import (
    TensorRTUnavailableError,
    engine_cache_key,
    import_tensorrt,
    require_cuda,
)

HAS_TRT = importlib.util.find_spec('tensorrt') is not None
HAS_CUDA = torch.cuda.is_available()
needs_trt = pytest.mark.skipif(
    not (HAS_TRT and HAS_CUDA), reason='needs the tensorrt package and a CUDA GPU (neither here)'
)
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason='needs a CUDA GPU (torch sees none)')


def test_engine_cache_key_changes_with_graph_weights_gpu_and_version():
    base = ('onnx-sha', 'model-hash', 'NVIDIA H100 80GB HBM3', '10.13.0')
    key = engine_cache_key(*base)
    assert key == engine_cache_key(*base)  # stable
    for i, other in enumerate(('onnx-sha2', 'model-hash2', 'NVIDIA H200', '11.4.0')):
        changed = list(base)
        changed[i] = other
        assert engine_cache_key(*changed) != key, f'field {i} is not part of the key'


@pytest.mark.skipif(HAS_TRT, reason='tensorrt is installed here')
def test_missing_tensorrt_is_a_clear_error():
    with pytest.raises(TensorRTUnavailableError, match='TensorRT Python package.*not installed'):
        import_tensorrt()


def test_tensorrt_needs_a_cuda_device():
    with pytest.raises(TensorRTUnavailableError, match="not 'cpu'"):
        require_cuda('cpu')
    if not HAS_CUDA:
        with pytest.raises(TensorRTUnavailableError, match='sees no CUDA device'):
            require_cuda('cuda')


@pytest.mark.skipif(HAS_TRT and HAS_CUDA, reason='tensorrt and CUDA are available here')
def test_build_engine_command_fails_clearly_without_tensorrt(caplog):
    from halo_ros.cli import main

    assert main(['build-engine', '--cameras', '1']) == 2
    assert 'tensorrt' in caplog.text.lower()


@pytest.mark.gpu
@needs_trt
def test_tensorrt_action_step_matches_torch(tmp_path):
    from engine_support import exported, shapes, tiny

    from halo_ros.engine.graphs import build_graph, example_inputs
    from halo_ros.engine.trt_runner import TrtRunner

    runner = TrtRunner.from_onnx(exported(), device='cuda', cache_dir=tmp_path)
    feeds = example_inputs('action_step', tiny(), shapes(), seed=9)
    got = runner.run('action_step', {n: t.cuda() for n, t in feeds.items()})['velocity']
    with torch.no_grad():
        want = build_graph('action_step', tiny(), shapes())(**feeds)
    rel = float((got.cpu() - want).abs().max() / want.abs().max())
    assert rel <= 1e-3  # TF32 matmuls


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_replay_matches_eager_torch():
    from engine_support import shapes, tiny

    from halo_ros.engine.graphs import Precision, build_graph, example_inputs
    from halo_ros.engine.runner import TorchRunner

    model = tiny().cuda()
    fp32 = dict.fromkeys(
        ['vit', 'prefill', 'decode_step', 'subgoal_step', 'action_step', 'vae_decode'],
        Precision.FP32,
    )
    runner = TorchRunner(model, shapes(), precision=fp32, cuda_graphs=True)
    for seed in (1, 2):  # the second call replays the captured graph with new inputs
        feeds = example_inputs('action_step', model, shapes(), seed=seed)
        got = runner.run('action_step', feeds)['velocity']
        with torch.no_grad():
            want = build_graph('action_step', model, shapes())(**feeds)
        np.testing.assert_allclose(got.cpu().numpy(), want.cpu().numpy(), atol=1e-4)


@pytest.mark.skipif(HAS_TRT and HAS_CUDA, reason='tensorrt and CUDA are available here')
def test_bench_refuses_tensorrt_before_measuring(caplog):
    from halo_ros.cli import main

    assert main(['bench', '--backend', 'tensorrt', '--device', 'cuda']) == 2
    assert 'tensorrt' in caplog.text.lower()


def _has_ort_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return 'CUDAExecutionProvider' in ort.get_available_providers() and HAS_CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not _has_ort_cuda(), reason='needs onnxruntime-gpu and a CUDA GPU (not here)')
def test_ort_cuda_iobinding_matches_cpu():
    from engine_support import exported, shapes, tiny

    from halo_ros.engine.graphs import example_inputs
    from halo_ros.engine.ort_runner import OrtRunner

    feeds = example_inputs('action_step', tiny(), shapes(), seed=4)
    want = OrtRunner(exported()).run('action_step', feeds)['velocity']
    cuda = OrtRunner(exported(), device='cuda')
    got = cuda.run('action_step', {n: t.cuda() for n, t in feeds.items()})['velocity']
    np.testing.assert_allclose(got.cpu().numpy(), want.numpy(), atol=1e-3)
