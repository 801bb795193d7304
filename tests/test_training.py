"""halo-ros train: the optimisation step learns, and a trained folder loads and acts."""

import numpy as np
import pytest
import torch
import yaml

from halo_ros.cli import main as cli_main
from halo_ros.engine.interface import Observation
from halo_ros.engine.loading import EngineConfig, build_model, load_engine
from halo_ros.model.config import load_config
from halo_ros.model.halo import HaloModel
from halo_ros.model.training import (
    TrainActions,
    TrainLatentImage,
    TrainText,
    TrainViTImage,
    forward_train,
)
from halo_ros.training.data import DatasetError, EmcotData, data_hash, episode_folders
from halo_ros.training.data import Sample as EmcotSample
from halo_ros.training.trainer import (
    TrainConfig,
    make_optimizer,
    sample_items,
    train_step,
    trainable,
)


def _fixed_sample(seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    grid = (2, 2)
    return [
        TrainViTImage(torch.rand(3, 112, 112, generator=g) * 2 - 1),
        TrainText((5, 6, 7), loss=False),
        TrainText(tuple(int(v) for v in torch.randint(0, 900, (12,), generator=g))),
        TrainLatentImage(
            torch.randn(4, 64, generator=g), grid, noisy=True, t=0.6, noise=torch.randn(4, 64)
        ),
        TrainLatentImage(torch.randn(4, 64, generator=g), grid, noisy=False),
        TrainActions(torch.randn(8, 14, generator=g), t=0.6, noise=torch.randn(8, 14)),
    ]


def test_optimizer_steps_on_a_fixed_batch_lower_every_loss():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = HaloModel(load_config('halo-tiny'))
    model.init_weights(seed=0)
    cfg = TrainConfig(lr=3e-3)
    batch = [_fixed_sample(0), _fixed_sample(1)]

    def losses() -> dict[str, float]:
        with torch.no_grad():
            outs = [forward_train(model, items) for items in batch]
        return {
            k: float(np.mean([float(getattr(o, k)) for o in outs])) for k in ('ce', 'mse', 'l1')
        }

    before = losses()
    params = trainable(model)
    opt = make_optimizer(params, cfg)
    for _ in range(8):
        step_losses, grad_norm = train_step(model, params, opt, batch, cfg)
        assert np.isfinite(grad_norm) and set(step_losses) == {'ce', 'mse', 'l1', 'obj'}
        assert step_losses['obj'] == []  # no grounded object in these thoughts
    after = losses()
    for k in ('ce', 'mse', 'l1'):
        assert after[k] < 0.9 * before[k], (k, before[k], after[k])


def test_a_packed_batch_gives_each_sample_what_it_gets_alone():
    """forward_train_batch packs samples (one ViT call, one call per expert, attention per
    sample): the losses, outputs and gradients equal running them one at a time."""
    from halo_ros.model.training import forward_train_batch

    torch.manual_seed(0)
    model = HaloModel(load_config('halo-tiny'))
    model.init_weights(seed=0)
    with torch.no_grad():  # heads off zero, so every path carries a gradient
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    batch = []
    for seed in range(3):
        items = _fixed_sample(seed)
        g = torch.Generator().manual_seed(10 + seed)
        ids = tuple(int(v) for v in torch.randint(0, 900, (6 + 3 * seed,), generator=g))
        items[2] = TrainText(ids, span_weight=(1, 4, 3.0))  # texts of different lengths
        actions, noise = torch.randn(2, 8, 14, generator=g)
        items.append(TrainActions(actions, t=0.3, noise=noise, prefix=seed))
        batch.append(items)
    alone = [
        forward_train(model, items, generator=torch.Generator().manual_seed(1)) for items in batch
    ]
    model.zero_grad()
    sum(o.total() for o in alone).backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    packed = forward_train_batch(model, batch, generator=torch.Generator().manual_seed(1))
    sum(o.total() for o in packed).backward()
    for a, b in zip(alone, packed, strict=True):
        for k in ('ce', 'mse', 'l1', 'span_ce'):
            assert float(getattr(b, k)) == pytest.approx(float(getattr(a, k)), rel=1e-5, abs=1e-6)
        assert a.spans == b.spans
        torch.testing.assert_close(b.hidden, a.hidden, rtol=1e-4, atol=1e-5)
    assert want.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, grad in want.items():
        torch.testing.assert_close(
            dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6
        )


def test_an_executed_prefix_is_given_clean_and_carries_no_loss():
    """Training-time real-time chunking: the first d rows of the chunk enter the model as the
    clean actions themselves (flow time 0) and only the rest is a flow-matching target."""
    torch.manual_seed(0)
    model = HaloModel(load_config('halo-tiny'))
    model.init_weights(seed=0)
    items = _fixed_sample(0)
    actions = items[-1].actions
    d = 3
    prefixed = [*items[:-1], TrainActions(actions, t=0.6, noise=torch.randn(8, 14), prefix=d)]
    out = forward_train(model, prefixed)
    x_t = out.inputs[len(prefixed) - 1]
    assert torch.equal(x_t[:d], actions[:d])  # exactly the executed actions
    assert not torch.allclose(x_t[d:], actions[d:])  # the rest is noised
    # No loss on the prefix rows: their predicted velocities do not reach the gradient.
    pred = out.predictions[len(prefixed) - 1]
    (grad,) = torch.autograd.grad(out.l1, pred)
    assert torch.count_nonzero(grad[:d]) == 0 and torch.count_nonzero(grad[d:]) > 0
    with pytest.raises(ValueError, match='prefix'):
        forward_train(model, [*items[:-1], TrainActions(actions, prefix=8)])

    # sample_items draws a prefix per noisy copy, within the configured bound.
    sample = EmcotSample(
        {'cam_high': np.zeros((60, 80, 3), np.uint8)},
        (5,),
        (6, 7),
        None,
        (0, 0),
        np.zeros((50, 14), np.float32),
    )
    rng = np.random.default_rng(0)
    drawn = [
        i.prefix
        for _ in range(20)
        for i in sample_items(
            model,
            sample,
            {},
            (2, 2),
            with_subgoal=False,
            action_samples=2,
            max_prefix_steps=10,
            rng=rng,
        )
        if isinstance(i, TrainActions)
    ]
    assert max(drawn) <= 10 and len(set(drawn)) > 3 and 0 in drawn


def test_the_lead_weight_scales_the_first_thought_token_only():
    model = HaloModel(load_config('halo-tiny'))
    model.init_weights(seed=0)
    items = _fixed_sample(0)
    text = items[2]

    def ce(weight):
        weighted = [*items[:2], TrainText(text.ids, lead_weight=weight), *items[3:]]
        out = forward_train(model, weighted, generator=torch.Generator().manual_seed(0))
        logits = out.predictions[2]
        per_token = torch.nn.functional.cross_entropy(
            logits, torch.tensor([*text.ids, 1001]), reduction='none'
        )
        return float(out.ce), per_token

    uniform, per_token = ce(1.0)
    assert uniform == pytest.approx(float(per_token.mean()), rel=1e-5)
    weighted, _ = ce(10.0)
    n = len(per_token)
    want = float((10 * per_token[0] + per_token[1:].sum()) / (n + 9))
    assert weighted == pytest.approx(want, rel=1e-5)


def test_random_shift_moves_the_frame_and_keeps_its_size():
    from halo_ros.training.trainer import random_shift

    frame = np.zeros((12, 16, 3), np.uint8)
    frame[6, 8] = 255
    rng = np.random.default_rng(1)
    shifted = [random_shift(frame, 2, rng) for _ in range(30)]
    assert all(f.shape == frame.shape for f in shifted)
    spots = {tuple(np.argwhere(f[..., 0] == 255)[0]) for f in shifted}
    assert len(spots) > 5 and all(abs(y - 6) <= 2 and abs(x - 8) <= 2 for y, x in spots)
    assert random_shift(frame, 0, rng) is frame


def test_train_command_writes_a_checkpoint_that_loads_and_acts(emcot, tmp_path):
    out = tmp_path / 'ckpt'
    args = ['train', str(emcot), '--out', str(out), '--steps', '3', '--batch', '2']
    assert cli_main([*args, '--ae-steps', '3', '--log-every', '1']) == 0

    meta = yaml.safe_load((out / 'training.yaml').read_text())
    folders = episode_folders([emcot])
    assert meta['format'] == 'halo_ros.checkpoint/1' and meta['model'] == 'halo-tiny'
    assert meta['data']['sha256'] == data_hash(folders)
    assert meta['data']['episodes'] == 2 and meta['training']['steps'] == 3
    assert meta['cameras'] == ['cam_high'] and meta['chunk_length'] == 50
    hw = tuple(meta['image_hw'])
    assert meta['max_thought_tokens'] >= 1 and meta['max_prefix_steps'] == 25
    assert set(meta['training']['final_losses']) == {'ce', 'mse', 'l1'}
    assert sum(p.stat().st_size for p in out.iterdir()) <= 20 * 2**20
    assert len((out / 'losses.jsonl').read_text().splitlines()) == 3

    # The strict loader every engine uses, then one action chunk from the eager engine.
    config = EngineConfig(checkpoint=str(out), cameras=('cam_high',), image_hw=hw)
    model, _, _ = build_model(config)
    assert not torch.equal(
        model.output_linear_layer.weight, torch.zeros_like(model.output_linear_layer.weight)
    )  # trained, not the zero-initialised head
    engine = load_engine(config)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    obs = Observation(0, {'cam_high': frame}, np.zeros(14, np.float32))
    noise = rng.standard_normal((50, 14)).astype(np.float32)
    result = engine.act(obs, None, noise)
    assert result.actions.shape == (50, 14) and np.isfinite(result.actions).all()

    # More training on top: the VAE is kept and the card accounts for both runs.
    more = tmp_path / 'more'
    more_args = ['--init', str(out), '--steps', '2', '--batch', '2', '--context-lag-s', '1']
    assert cli_main(['train', str(emcot), '--out', str(more), *more_args]) == 0
    card = yaml.safe_load((more / 'training.yaml').read_text())
    assert card['training']['continued_from']['steps'] == 3 and card['training']['steps'] == 2
    vae = {k: v for k, v in model.state_dict().items() if k.startswith('vae.')}
    again, _, _ = build_model(EngineConfig(checkpoint=str(more), cameras=('cam_high',)))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in vae.items())


def test_normalised_actions_train_in_the_card_space_and_the_engine_speaks_radians(
    emcot, tmp_path, caplog
):
    """--normalize-actions: the flow trains on (a - mean) / std of the data, the card carries
    the statistics, and the loaded engine takes and gives raw radians: an executed prefix comes
    back exactly, the rest is the inner chunk unnormalised. Weights trained that way refuse to
    continue on raw actions."""
    from halo_ros.engine.normalized import NormalizedEngine
    from halo_ros.model.action_norm import MIN_STD, ActionNorm
    from halo_ros.runtime.seam import SeamMode, SeamPlan

    out = tmp_path / 'norm'
    args = ['train', str(emcot), '--out', str(out), '--steps', '2', '--batch', '2']
    assert cli_main([*args, '--ae-steps', '2', '--normalize-actions']) == 0
    card = yaml.safe_load((out / 'training.yaml').read_text())
    norm = ActionNorm.from_card(card)
    data = np.concatenate([e.actions for e in EmcotData([emcot], _tokenizer()).episodes])
    np.testing.assert_allclose(norm.mean, data.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(norm.std, np.maximum(data.std(axis=0), MIN_STD), atol=1e-5)
    assert (norm.std >= MIN_STD).all() and (norm.std > MIN_STD).any()

    hw = tuple(card['image_hw'])
    engine = load_engine(EngineConfig(checkpoint=str(out), cameras=('cam_high',), image_hw=hw))
    assert isinstance(engine, NormalizedEngine)
    rng = np.random.default_rng(1)
    obs = Observation(
        0, {'cam_high': rng.integers(0, 256, (*hw, 3), dtype=np.uint8)}, np.zeros(14, np.float32)
    )
    noise = rng.standard_normal((50, 14)).astype(np.float32)
    target = (data[:50] + 0.01).astype(np.float32)  # raw radians, as the runtime plans seams
    d = 5
    weights = (np.arange(50) < d).astype(np.float32)
    seam = SeamPlan(SeamMode.PREFIX, target, weights, delay_steps=d, valid_steps=50)
    raw = engine.act(obs, None, noise, seam).actions
    np.testing.assert_allclose(raw[:d], target[:d], atol=1e-5)
    inner_seam = SeamPlan(SeamMode.PREFIX, norm.normalize(target), weights, d, 50)
    inner = engine.inner.act(obs, None, noise, inner_seam).actions
    np.testing.assert_allclose(raw, inner * norm.std + norm.mean, atol=1e-5)
    assert not np.allclose(raw[d:], inner[d:], atol=1e-2)  # the units really differ

    more = ['train', str(emcot), '--out', str(tmp_path / 'raw'), '--init', str(out)]
    assert cli_main([*more, '--steps', '1', '--batch', '1']) == 2
    assert 'continue it with --normalize-actions' in caplog.text


def _tokenizer():
    from halo_ros.model.tokenizer import tokenizer_for

    return tokenizer_for(load_config('halo-tiny'))


def test_the_data_holds_the_thought_every_tick_and_pads_chunks(emcot):
    from halo_ros.model.tokenizer import tokenizer_for
    from halo_ros.recording.emcot import training_sample

    tok = tokenizer_for(load_config('halo-tiny'))
    data = EmcotData([emcot], tok)
    ep = data.episodes[0]
    for tick in (0, ep.length // 2, ep.length - 3):
        want = training_sample(ep.folder, tick)
        got = data.sample_at(0, tick)
        assert tok.decode(got.thought_ids) == want.thought
        assert tok.decode(got.prompt_ids) == want.prompt
        assert got.goal_key == (0, want.subtask_index)
        np.testing.assert_allclose(got.actions, want.actions)
    # --plan-steps 0: the subtask and the movement only.
    short = EmcotData([emcot], tok, plan_steps=0).sample_at(0, ep.length // 2)
    text = tok.decode(short.thought_ids)
    assert text.startswith('<|plan|><|subtask|>') and '<|movement|>[LEFT]: ' in text
    assert len(short.thought_ids) < len(data.sample_at(0, ep.length // 2).thought_ids)

    # A lagged context: images and actions of the tick, thought and goal of an earlier one,
    # trained as conditioning only (no CE on that thought, no subgoal target).
    late = ep.length - 3
    lagged = data.sample_at(0, late, context_tick=0)
    assert lagged.lagged and lagged.thought_ids == ep.thought_ids[0]
    assert lagged.goal_key == (0, 0) != data.sample_at(0, late).goal_key
    np.testing.assert_allclose(lagged.actions, data.sample_at(0, late).actions)
    model = HaloModel(load_config('halo-tiny'))
    goals = {lagged.goal_key: torch.zeros(4, 64)}
    items = sample_items(model, lagged, goals, (2, 2))
    assert not any(isinstance(i, TrainText) and i.loss for i in items)
    assert [i.noisy for i in items if isinstance(i, TrainLatentImage)] == [False]


def test_still_ticks_are_drawn_less(emcot):
    from halo_ros.model.tokenizer import tokenizer_for
    from halo_ros.training.data import _still

    moving = np.linspace(0, 1, 30)[:, None] * np.ones((1, 14))
    actions = np.concatenate([moving, np.ones((30, 14))]).astype(np.float32)
    still = _still(actions)
    assert not still[:15].any() and still[35:].all()

    tok = tokenizer_for(load_config('halo-tiny'))
    uniform = EmcotData([emcot], tok)
    rare = EmcotData([emcot], tok, still_weight=0.05)
    assert rare.still_ticks > 0
    flags = np.concatenate([_still(e.actions) for e in rare.episodes])
    rng = np.random.default_rng(0)

    def share(data):
        draws = [data._draw(rng) for _ in range(2000)]
        offsets = np.cumsum([0, *data.lengths[:-1]])
        return np.mean([flags[offsets[e] + t] for e, t in draws])

    assert share(rare) < 0.5 * share(uniform)
    with pytest.raises(ValueError, match='still_weight'):
        EmcotData([emcot], tok, still_weight=0)


def test_the_start_of_each_episode_is_drawn_more(emcot):
    from halo_ros.model.tokenizer import tokenizer_for

    tok = tokenizer_for(load_config('halo-tiny'))
    rng = np.random.default_rng(0)

    def share(data, start_s=0.5):
        draws = [data._draw(rng) for _ in range(3000)]
        return np.mean([t < round(start_s * data.fps) for _, t in draws])

    uniform = EmcotData([emcot], tok)
    heavy = EmcotData([emcot], tok, start_weight=8.0, start_s=0.5)
    ticks = round(0.5 * heavy.fps) * len(heavy.episodes)
    assert heavy.start_ticks == ticks and EmcotData([emcot], tok).start_ticks == 0
    # Uniform: the start's share of the ticks; weighted 8x: 8 / (8 + rest) of the draws.
    assert share(uniform) == pytest.approx(ticks / uniform.ticks, abs=0.03)
    expected = 8 * ticks / (8 * ticks + heavy.ticks - ticks)
    assert share(heavy) == pytest.approx(expected, abs=0.04) and share(heavy) > 3 * share(uniform)
    # Still ticks at the start are drawn as start (the expert waits there before it moves).
    from halo_ros.training.data import _still

    both = EmcotData([emcot], tok, still_weight=0.05, start_weight=8.0, start_s=0.5)
    still_after = sum(int(_still(e.actions)[round(0.5 * e.fps) :].sum()) for e in both.episodes)
    assert both.still_ticks == still_after
    with pytest.raises(ValueError, match='start_weight'):
        EmcotData([emcot], tok, start_weight=0)


def test_a_folder_that_is_not_an_emcot_episode_is_rejected(tmp_path, caplog):
    (tmp_path / 'junk').mkdir()
    (tmp_path / 'junk' / 'notes.txt').write_text('hello')
    with pytest.raises(DatasetError, match='not an EM-CoT episode folder'):
        episode_folders([tmp_path / 'junk'])
    assert cli_main(['train', str(tmp_path / 'junk'), '--out', str(tmp_path / 'o')]) == 2
    assert 'annotation.yaml missing' in caplog.text

    bad = tmp_path / 'bad'
    bad.mkdir()
    (bad / 'annotation.yaml').write_text(yaml.safe_dump({'format': 'something/else'}))
    with pytest.raises(DatasetError, match="format 'something/else'"):
        EmcotData([bad], None)


def test_the_shipped_checkpoint_loads_like_released_weights_and_says_how_it_was_made():
    from halo_ros.engine.loading import checkpoint_card
    from halo_ros.model.checkpoint import EMA_FILE, VAE_FILE, load_checkpoint
    from halo_ros.paths import model_file

    folder = model_file('halo-tiny-transfer-cube')
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert size <= 20 * 1024 * 1024, f'{size / 2**20:.1f} MiB'
    card = checkpoint_card(str(folder))
    assert card['model'] == 'halo-tiny'
    assert card['cameras'] == ['cam_high', 'cam_left_wrist', 'cam_right_wrist']
    assert card['max_prefix_steps'] > 0  # trained for training-time RTC seams
    assert len(card['data']['sha256']) == 64 and card['data']['episodes'] >= 20
    assert card['training']['steps'] > 0 and card['max_thought_tokens'] > 0
    model = HaloModel(load_config('halo-tiny'))
    report = load_checkpoint(model, folder / EMA_FILE, folder / VAE_FILE)  # strict, as released
    assert report.ok, report.summary()


@pytest.mark.parametrize('hw', [(120, 160), (240, 320), (480, 640)])
def test_goal_images_are_sized_as_every_engine_sizes_the_subgoal(hw):
    """Training's goal latents, the eager engine's subgoal and the static graphs' latent block
    share one grid (the release's VAE resize, stride 16): at 120x160 the trainer and the eager
    engine once used 8x10 while the graphs used 8x11."""
    from halo_ros.engine.layout import PrefixLayout
    from halo_ros.model.inference import encode_image_latents
    from halo_ros.training.autoencoder import vae_input

    config = EngineConfig(cameras=('cam_high',), image_hw=hw)
    model, _, _ = build_model(config)
    frame = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    with torch.no_grad():
        _, trained = encode_image_latents(model, vae_input(model, frame))
    graphs = PrefixLayout.for_model(model.cfg, cameras=1, image_hw=hw).latent_grid
    obs = Observation(0, {'cam_high': frame}, np.zeros(14, np.float32))
    eager = load_engine(config).reason(obs, 'pick', 1, max_tokens=2).subgoal_grid
    assert tuple(trained) == tuple(graphs) == tuple(eager)
