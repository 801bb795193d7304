"""Cached inference equals the training-mask forward; noise isolation; decoding; EM-CoT stages."""

import pytest
import torch
from model_support import image, random_tiny, rel_err

from halo_ros.model import inference
from halo_ros.model.embed import grid_position_ids
from halo_ros.model.segments import LatentSegment, TextSegment, VAEImageSegment, ViTImageSegment
from halo_ros.model.tokenizer import tokenizer_for
from halo_ros.model.training import (
    SplitMode,
    TrainActions,
    TrainLatentImage,
    TrainText,
    TrainViTImage,
    forward_train,
    training_mask,
)

PROMPT = (5, 17, 42, 99, 7)
GRID = (2, 3)  # latent tokens of a 32 x 48 px image


@pytest.fixture(scope='module')
def model():
    return random_tiny()


@pytest.fixture(scope='module')
def data():
    g = torch.Generator().manual_seed(1)
    return {
        'frame': image(56, 84, seed=1),  # 4 x 6 ViT patches
        'latent': torch.randn(6, 64, generator=g),
        'latent_noise': torch.randn(6, 64, generator=g),
        'actions': torch.randn(8, 14, generator=g),
        'action_noise': torch.randn(8, 14, generator=g),
    }


def test_training_mask_rules():
    m = training_mask(
        [3, 2, 2, 2], [SplitMode.CAUSAL, SplitMode.NOISE, SplitMode.FULL, SplitMode.NOISE]
    )
    assert m[:3, :3].equal(torch.ones(3, 3, dtype=torch.bool).tril())
    assert m[3:5, :5].all()  # a noisy split sees the prefix and itself
    assert not m[5:, 3:5].any() and not m[:3, 3:].any()  # nobody else sees it
    assert m[5:7, :3].all() and m[5:7, 5:7].all() and not m[5:7, 7:].any()
    assert m[7:, 7:].all() and not m[7:, 3:5].any()


def test_cached_action_step_equals_full_forward(model, data):
    out = forward_train(
        model,
        [
            TrainViTImage(data['frame']),
            TrainText(PROMPT),
            TrainLatentImage(data['latent'], GRID, noisy=False),
            TrainActions(data['actions'], t=0.7, noise=data['action_noise']),
        ],
    )
    cache = model.prefill(
        [ViTImageSegment(data['frame']), TextSegment(PROMPT), LatentSegment(data['latent'], GRID)]
    )
    with torch.no_grad():
        v = model.action_velocity(
            out.inputs[3],
            torch.tensor(0.7),
            cache.k,
            cache.v,
            cache.key_valid(),
            torch.tensor(cache.next_rope),
        )
    assert out.predictions[3].abs().max() > 1e-3  # a non-trivial velocity
    assert rel_err(v, out.predictions[3]) <= 1e-5


def test_cached_action_step_with_a_clean_prefix_equals_full_forward(model, data):
    """Per-row flow times: the training forward with an executed prefix and the cached step
    that sampling runs see the same rows."""
    d = 3
    out = forward_train(
        model,
        [
            TrainViTImage(data['frame']),
            TrainText(PROMPT),
            TrainActions(data['actions'], t=0.4, noise=data['action_noise'], prefix=d),
        ],
    )
    cache = model.prefill([ViTImageSegment(data['frame']), TextSegment(PROMPT)])
    t = inference.prefix_times(torch.tensor(0.4), 8, d)
    assert t.tolist() == pytest.approx([0, 0, 0, 0.4, 0.4, 0.4, 0.4, 0.4])
    with torch.no_grad():
        v = model.action_velocity(
            out.inputs[2], t, cache.k, cache.v, cache.key_valid(), torch.tensor(cache.next_rope)
        )
    assert rel_err(v, out.predictions[2]) <= 1e-5


def test_sampling_with_a_clean_prefix_keeps_it_and_conditions_the_rest(model, data):
    cache = model.prefill([ViTImageSegment(data['frame']), TextSegment(PROMPT)])
    noise = data['action_noise']
    plain = model.sample_actions(cache, noise, num_steps=4)
    prefix = data['actions'][:3]
    out = model.sample_actions(cache, noise, num_steps=4, prefix=prefix)
    assert torch.equal(out[:3], prefix)
    assert (out[3:] - plain[3:]).abs().max() > 1e-5
    with pytest.raises(ValueError, match='alternative'):
        model.sample_actions(cache, noise, num_steps=4, prefix=prefix, guidance=_Recorder())


def test_cached_subgoal_step_equals_full_forward(model, data):
    # [frame, prompt, noisy latent, its clean copy, actions]: the released EM-CoT order.
    out = forward_train(
        model,
        [
            TrainViTImage(data['frame']),
            TrainText(PROMPT),
            TrainLatentImage(data['latent'], GRID, noisy=True, t=0.6, noise=data['latent_noise']),
            TrainLatentImage(data['latent'], GRID, noisy=False),
            TrainActions(data['actions'], t=0.3, noise=data['action_noise']),
        ],
    )
    cache = model.prefill([ViTImageSegment(data['frame']), TextSegment(PROMPT)])
    pos = grid_position_ids(*GRID, model.cfg.max_latent_size)
    with torch.no_grad():
        v = model.latent_velocity(
            out.inputs[2],
            torch.tensor(0.6),
            pos,
            cache.k,
            cache.v,
            cache.key_valid(),
            torch.tensor(cache.next_rope),
        )
    assert rel_err(v, out.predictions[2]) <= 1e-5
    # The action block after the clean copy sees the same prefix as a cache holding the copy.
    cache = model.prefill([LatentSegment(data['latent'], GRID)], cache)
    with torch.no_grad():
        va = model.action_velocity(
            out.inputs[4],
            torch.tensor(0.3),
            cache.k,
            cache.v,
            cache.key_valid(),
            torch.tensor(cache.next_rope),
        )
    assert rel_err(va, out.predictions[4]) <= 1e-5


def _sequence(data, latent_noise, clean_latent):
    return [
        TrainViTImage(data['frame']),
        TrainText(PROMPT),
        TrainLatentImage(data['latent'], GRID, noisy=True, t=0.5, noise=latent_noise),
        TrainLatentImage(clean_latent, GRID, noisy=False),
        TrainActions(data['actions'], t=0.5, noise=data['action_noise']),
    ]


@torch.no_grad()
def test_noise_isolation(model, data):
    base = forward_train(model, _sequence(data, data['latent_noise'], data['latent']))
    s, e = base.spans[2]
    other = forward_train(model, _sequence(data, data['latent_noise'] * 3 + 1, data['latent']))
    changed = (other.hidden - base.hidden).abs().amax(dim=1)  # [N]
    assert changed[s + 1 : e - 1].max() > 1e-3  # the noisy payload itself did change
    assert changed[:s].max() <= 1e-6 and changed[e:].max() <= 1e-6

    # The clean target after its noisy copy is invisible to the noisy copy (and to earlier rows).
    peek = forward_train(model, _sequence(data, data['latent_noise'], data['latent'] * -2))
    changed = (peek.hidden - base.hidden).abs().amax(dim=1)
    cs, ce = base.spans[3]
    assert changed[:cs].max() <= 1e-6
    assert changed[cs:ce].max() > 1e-3


def test_decoding_with_cache_equals_without(model, data):
    cache = model.prefill([ViTImageSegment(data['frame']), TextSegment(PROMPT)])
    out = model.decode_text(cache, 5, end_token=-1)
    assert len(out.token_ids) == 5 and out.logits.shape == (5, model.cfg.llm.vocab_size)
    # Recompute every step from scratch: [frame, prompt, <|im_start|> g1..g4] with the
    # training mask; row j of the last text block must give decode step j's logits.
    full = forward_train(
        model,
        [
            TrainViTImage(data['frame']),
            TrainText(PROMPT),
            TrainText(tuple(out.token_ids[:4]), loss=False, close=False),
        ],
    )
    s, e = full.spans[2]
    with torch.no_grad():
        logits = model.language_model.lm_head(full.hidden[s:e]).float()
    assert rel_err(out.logits, logits) <= 1e-5
    assert out.token_ids == logits.argmax(-1).tolist()
    assert cache.length == 4 * 6 + 2 + len(PROMPT) + 2  # decoding left the cache untouched


def test_decode_stops_at_end_token(model, data):
    cache = model.prefill([TextSegment(PROMPT)])
    first = model.decode_text(cache, 3, end_token=-1).token_ids[0]
    out = model.decode_text(cache, 3, end_token=first)
    assert out.stopped and out.token_ids == [] and out.logits.shape[0] == 1


class _Recorder:
    def __init__(self):
        self.calls, self.grad_ok = [], True

    def velocity(self, x_t, t, step, velocity_fn):
        x = x_t.detach().requires_grad_(True)
        v = velocity_fn(x)
        (grad,) = torch.autograd.grad(v.square().sum(), x)
        self.grad_ok &= bool(grad.abs().max() > 0)
        self.calls.append((step, t))
        return v.detach()


def test_guidance_hook(model, data):
    cache = model.prefill([ViTImageSegment(data['frame']), TextSegment(PROMPT)])
    noise = data['action_noise']
    plain = model.sample_actions(cache, noise, num_steps=4)
    rec = _Recorder()
    guided = model.sample_actions(cache, noise, num_steps=4, guidance=rec)
    assert [s for s, _ in rec.calls] == [0, 1, 2, 3]
    assert [t for _, t in rec.calls] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert rec.grad_ok  # velocity_fn is differentiable w.r.t. x
    assert rel_err(guided, plain) <= 1e-6

    class Frozen:  # integrates whatever the hook returns: zero velocity keeps the noise
        def velocity(self, x_t, t, step, velocity_fn):
            return torch.zeros_like(x_t)

    assert torch.equal(model.sample_actions(cache, noise, num_steps=4, guidance=Frozen()), noise)


def test_em_cot_three_stages_on_halo_tiny(model):
    """Think (text), imagine (subgoal image, with CFG), act (chunk), all from one model API."""
    tok = tokenizer_for(model.cfg)
    prompt = model.cfg.prompt_template.format(instruction='pick up the red cube')
    frame_vit, frame_vae = image(84, 112, seed=3), image(32, 48, seed=3)
    segments = [
        ViTImageSegment(frame_vit),
        VAEImageSegment(frame_vae),
        TextSegment(tuple(tok.encode(prompt))),
    ]
    caches = inference.prefill_cfg(model, segments)
    thought = model.decode_text(
        caches.full, 6, temperature=0.3, generator=torch.Generator().manual_seed(0)
    )
    assert 1 <= len(thought.token_ids) + thought.stopped <= 6
    cache = model.prefill([TextSegment(tuple(thought.token_ids))], caches.full)

    grid = model.latent_grid(32, 48)
    cfg = inference.Cfg(inference.CfgCaches(cache, caches.no_text, caches.no_image))
    noise = torch.randn(grid[0] * grid[1], 64, generator=torch.Generator().manual_seed(4))
    subgoal = model.sample_subgoal(cache, grid, noise, num_steps=3, cfg=cfg)
    assert subgoal.shape == (6, 64) and torch.isfinite(subgoal).all()
    picture = inference.decode_latent_image(model, subgoal, grid)
    assert picture.shape == (3, 32, 48)

    cache = model.prefill([LatentSegment(subgoal, grid)], cache)
    chunk = model.sample_actions(cache, torch.randn(16, 14), num_steps=9)
    assert chunk.shape == (16, 14) and chunk.dtype == torch.float32
    assert torch.isfinite(chunk).all()


def test_training_losses_reach_all_experts(model, data):
    model.zero_grad()
    out = forward_train(model, _sequence(data, data['latent_noise'], data['latent']))
    assert all(x is not None and torch.isfinite(x) for x in (out.ce, out.mse, out.l1))
    out.total().backward()
    layer = model.language_model.model.layers[0].self_attn
    for name in ('q_proj', 'q_proj_moe_gen', 'q_proj_moe_act'):
        assert getattr(layer, name).weight.grad.abs().max() > 0, name
    model.zero_grad()


def test_cfg_combination_follows_release(model, data):
    segments = [ViTImageSegment(data['frame']), TextSegment(PROMPT)]
    caches = inference.prefill_cfg(model, segments)
    assert caches.no_text.length == 26 and caches.no_image.length == len(PROMPT) + 2
    noise = data['action_noise']
    plain = model.sample_actions(caches.full, noise, num_steps=3)
    unit = inference.ActionCfg(model, inference.Cfg(caches, text_scale=1.0, img_scale=3.0))
    assert torch.equal(model.sample_actions(caches.full, noise, num_steps=3, guidance=unit), plain)
    cfg = inference.Cfg(caches, text_scale=4.0, img_scale=2.0, interval=(0.4, 1.0))
    steps = []
    guided = model.sample_actions(
        caches.full,
        noise,
        num_steps=3,
        guidance=inference.ActionCfg(model, cfg),
        on_step=lambda i, t, x, v: steps.append((t, x, v)),
    )
    assert not torch.allclose(guided, plain)
    # Step 0 (t = 1) by hand: v_img + 2 ((v_txt + 4 (v - v_txt)) - v_img), global renorm.
    t, x, v = steps[0]
    velocity = {
        name: model.action_velocity(
            x, torch.tensor(t), c.k, c.v, c.key_valid(), torch.tensor(c.next_rope)
        ).detach()
        for name, c in (('full', caches.full), ('text', caches.no_text), ('img', caches.no_image))
    }
    expected = velocity['img'] + 2 * (
        velocity['text'] + 4 * (velocity['full'] - velocity['text']) - velocity['img']
    )
    expected = expected * min(1.0, float(velocity['full'].norm() / expected.norm()))
    assert rel_err(v, expected) <= 1e-5
    # Outside the interval (t = 1/3 <= 0.4) the plain velocity is used.
    t, x, v = steps[2]
    c = caches.full
    v_plain = model.action_velocity(
        x, torch.tensor(t), c.k, c.v, c.key_valid(), torch.tensor(c.next_rope)
    )
    assert rel_err(v, v_plain.detach()) <= 1e-6
