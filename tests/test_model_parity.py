"""Weight compatibility: our model on the released code's tiny-HALO outputs (halo-parity/)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from halo_ros.model import inference
from halo_ros.model.checkpoint import load_checkpoint
from halo_ros.model.config import load_config
from halo_ros.model.halo import HaloModel
from halo_ros.model.segments import TextSegment, ViTImageSegment

# Outputs of the released HALO code on a tiny model (fixtures/halo-parity/README.md says how
# they were made): kept with the tests, so every clone checks weight compatibility.
PARITY = Path(__file__).resolve().parent / 'fixtures' / 'halo-parity'
ATOL = 1e-5


@pytest.fixture(scope='module')
def ref():
    return {k: torch.from_numpy(v) for k, v in np.load(PARITY / 'halo_tiny_reference.npz').items()}


@pytest.fixture(scope='module')
def model():
    torch.set_num_threads(1)
    m = HaloModel(load_config('halo-tiny')).eval()
    report = load_checkpoint(m, PARITY / 'halo_tiny_reference.safetensors')  # strict
    assert len(report.loaded) == 148
    return m


@pytest.fixture(scope='module')
def cache(model, ref):
    # README call sequence: image block at rope 0, then the text [5, 17, 42, 99] at rope 1..6.
    return inference.prefill(
        model, [ViTImageSegment(ref['image_tensor_chw']), TextSegment((5, 17, 42, 99))]
    )


def close(ours, theirs, atol=ATOL):
    assert ours.shape == theirs.shape
    err = (ours.float() - theirs.float()).abs().max().item()
    assert err <= atol, f'max abs error {err:.3g} > {atol}'


def test_vit_inputs_and_output(model, ref):
    patches, pos = model.vit_tokens(ref['image_tensor_chw'])
    close(patches, ref['vit_in_packed_vit_tokens'], 0)
    assert torch.equal(pos, ref['vit_in_packed_vit_position_ids'])
    with torch.no_grad():
        vit = model.vit_model(patches, pos, [patches.shape[0]])
        close(vit, ref['vit_out'])
        close(model.vit_embeds(patches, pos, [patches.shape[0]]), ref['vit_llm_embeds'])


def test_prefix_kv_cache(cache, ref):
    assert cache.length == 200 and cache.next_rope == 7
    close(cache.k, ref['prefix_k_cache'])
    close(cache.v, ref['prefix_v_cache'])


def test_single_action_velocity(model, cache, ref):
    k, v = cache.k, cache.v
    with torch.no_grad():
        vel = model.action_velocity(
            ref['x_t_single'],
            torch.tensor(0.7),
            k,
            v,
            cache.key_valid(),
            torch.tensor(cache.next_rope),
        )
    close(vel, ref['v_single'])


def test_action_sampling(model, cache, ref):
    steps = []
    actions = inference.sample_actions(
        model,
        cache,
        ref['sample_init_noise'],
        num_steps=9,
        on_step=lambda i, t, x, v: steps.append((t, x, v)),
    )
    close(torch.tensor([t for t, _, _ in steps]), ref['sample_step_t'], 0)
    close(torch.stack([x for _, x, _ in steps]), ref['sample_step_x'])
    close(torch.stack([v for _, _, v in steps]), ref['sample_step_v'])
    close(actions, ref['actions'])
    close(actions - ref['sample_init_noise'], ref['actions'] - ref['sample_init_noise'])


def test_greedy_decode(model, cache, ref):
    out = inference.decode_text(model, cache, 6, end_token=-1)  # release: end_token_id=None
    close(out.logits, ref['decode_logits'])
    assert out.token_ids[:5] == ref['greedy_ids'].tolist()


def test_padded_prefix_with_key_mask_matches(model, cache, ref):
    # The exportable form: a fixed-length prefix with a key-validity mask.
    k, v, valid = cache.padded(256)
    with torch.no_grad():
        vel = model.action_velocity(
            ref['x_t_single'], torch.tensor(0.7), k, v, valid, torch.tensor(cache.next_rope)
        )
    close(vel, ref['v_single'])


def test_preprocessing_matches_release(ref):
    from halo_ros.model.preprocess import resize_image, target_size, to_tensor

    cfg = load_config('halo-tiny').vit
    resized = resize_image(
        ref['raw_image_uint8'].numpy(), cfg.image_max_px, cfg.image_min_px, cfg.patch_size
    )
    assert resized.shape == (168, 224, 3)
    assert np.abs(resized.astype(int) - ref['image_resized_uint8'].numpy()).max() <= 1
    close(to_tensor(ref['image_resized_uint8'].numpy()), ref['image_tensor_chw'], 1e-6)
    assert target_size(240, 320, 980, 378, 14) == (378, 504)  # 27 x 36 = 972 real ViT tokens


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_parity_on_cuda(ref):
    torch.backends.cuda.matmul.allow_tf32 = False
    m = HaloModel(load_config('halo-tiny')).eval()
    load_checkpoint(m, PARITY / 'halo_tiny_reference.safetensors')
    m = m.cuda()
    cache = inference.prefill(
        m, [ViTImageSegment(ref['image_tensor_chw']), TextSegment((5, 17, 42, 99))]
    )
    close(cache.k.cpu(), ref['prefix_k_cache'], 1e-4)
    actions = inference.sample_actions(m, cache, ref['sample_init_noise'].cuda(), num_steps=9)
    close(actions.cpu(), ref['actions'], 1e-4)
    logits = inference.decode_text(m, cache, 6, end_token=-1).logits
    close(logits.cpu(), ref['decode_logits'], 1e-4)
