"""The action flow step exports to ONNX with static shapes (padded prefix + key mask)."""

import numpy as np
import pytest
import torch

from halo_ros.model.segments import TextSegment, ViTImageSegment
from tests.model_support import image, random_tiny

ort = pytest.importorskip('onnxruntime', reason='onnxruntime not installed')


class ActionStep(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t, k, v, valid, rope):
        return self.model.action_velocity(x, t, k, v, valid, rope)


def test_action_step_exports_and_matches_onnxruntime(tmp_path):
    model = random_tiny()
    cache = model.prefill([ViTImageSegment(image(56, 84)), TextSegment((5, 6, 7))])
    k, v, valid = cache.padded(64)  # fixed prefix length, 31 valid keys
    inputs = {
        'x': torch.randn(8, 14, generator=torch.Generator().manual_seed(0)),
        't': torch.tensor(0.5),
        'k': k,
        'v': v,
        'valid': valid,
        'rope': torch.tensor(cache.next_rope),
    }
    path = tmp_path / 'action_step.onnx'
    torch.onnx.export(
        ActionStep(model),
        tuple(inputs.values()),
        str(path),
        input_names=list(inputs),
        output_names=['velocity'],
        dynamo=False,
        opset_version=17,
    )
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    (out,) = session.run(None, {name: t.numpy() for name, t in inputs.items()})
    with torch.no_grad():
        ref = model.action_velocity(*inputs.values())
    assert np.abs(out - ref.numpy()).max() <= 1e-5
    # The same graph serves another prefix length through the mask alone.
    short = model.prefill([TextSegment((5, 6))])
    k2, v2, valid2 = short.padded(64)
    feed = dict(inputs, k=k2, v=v2, valid=valid2, rope=torch.tensor(short.next_rope))
    (out2,) = session.run(None, {name: t.numpy() for name, t in feed.items()})
    with torch.no_grad():
        ref2 = model.action_velocity(
            inputs['x'],
            inputs['t'],
            short.k,
            short.v,
            short.key_valid(),
            torch.tensor(short.next_rope),
        )
    assert np.abs(out2 - ref2.numpy()).max() <= 1e-5
