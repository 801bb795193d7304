"""Checkpoint IO, the released layout at halo-4.5b scale, configs, tokenizer and `model info`."""

import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from model_support import random_tiny
from safetensors.torch import load_file, save_file

from halo_ros import cli
from halo_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from halo_ros.model.config import config_from_dict, config_to_dict, load_config
from halo_ros.model.halo import HaloModel
from halo_ros.model.info import summarize
from halo_ros.model.tokenizer import HaloTokenizer, build_tiny_tokenizer, tokenizer_for

PARITY = Path(__file__).resolve().parent / 'fixtures/halo-parity/halo_tiny_reference.safetensors'


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    model = random_tiny(seed=3)
    directory = tmp_path_factory.mktemp('ckpt')
    save_checkpoint(model, directory, dtype=None, vae_dtype=None)
    return model, directory


def test_save_load_round_trip_is_bit_exact(saved):
    model, directory = saved
    fresh = HaloModel(load_config('halo-tiny'))
    report = load_checkpoint(fresh, directory / 'ema.safetensors', directory / 'ae.safetensors')
    assert report.ok and len(report.loaded) == len(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name


def test_default_save_is_released_layout(saved, tmp_path):
    model, _ = saved
    ema, ae = save_checkpoint(model, tmp_path)
    bagel, vae = load_file(str(ema)), load_file(str(ae))
    assert all(t.dtype == torch.bfloat16 for t in bagel.values())  # training saves bf16
    assert all(t.dtype == torch.float32 for t in vae.values())  # FLUX ae.safetensors is fp32
    assert 'encoder.conv_in.weight' in vae and not any(k.startswith('vae.') for k in bagel)
    assert len(bagel) + len(vae) == len(model.state_dict())
    assert set(bagel) == set(load_file(str(PARITY)))  # the released key set (layers 0-1)


def _tamper(directory, tmp_path, edit):
    tensors = load_file(str(directory / 'ema.safetensors'))
    edit(tensors)
    path = tmp_path / 'ema.safetensors'
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    'edit, label, name',
    [
        (
            lambda t: t.pop('language_model.model.layers.1.mlp_moe_act.up_proj.weight'),
            'missing',
            'language_model.model.layers.1.mlp_moe_act.up_proj.weight',
        ),
        (
            lambda t: t.update({'language_model.model.layers.2.q_proj.weight': torch.zeros(2)}),
            'unexpected',
            'language_model.model.layers.2.q_proj.weight',
        ),
        (
            lambda t: t.update({'output_linear_layer.weight': torch.zeros(7, 128)}),
            'mis-shaped',
            'output_linear_layer.weight',
        ),
    ],
)
def test_bad_checkpoint_fails_naming_the_tensor(saved, tmp_path, edit, label, name):
    _, directory = saved
    path = _tamper(directory, tmp_path, edit)
    with pytest.raises(CheckpointError, match=rf'{label}: .*{re.escape(name)}'):
        load_checkpoint(HaloModel(load_config('halo-tiny')), path)
    report = load_checkpoint(HaloModel(load_config('halo-tiny')), path, strict=False)
    assert not report.ok and any(
        name in n for n in report.missing + report.unexpected + report.mismatched
    )


def test_finetune_on_top_of_pretrain(saved, tmp_path):
    # The no-CoT fine-tune lacks the 9 gen-bridge tensors; the release loads pretrain first.
    model, directory = saved
    bridge = ('time_embedder.', 'vae2llm.', 'llm2vae.', 'latent_pos_embed.')
    path = _tamper(
        directory, tmp_path, lambda t: [t.pop(k) for k in list(t) if k.startswith(bridge)]
    )
    with pytest.raises(CheckpointError, match='9 missing'):
        load_checkpoint(HaloModel(load_config('halo-tiny')), path)
    report = load_checkpoint(
        HaloModel(load_config('halo-tiny')), [directory / 'ema.safetensors', path]
    )
    assert report.ok


def _expert_params_per_layer(llm, mlp_width):
    d, kv, hd = llm.hidden_size, llm.num_kv_heads * llm.head_dim, llm.head_dim
    attention = 2 * d * d + 2 * d * kv + d + 2 * kv  # q, o, k, v weights + q/k/v biases
    return attention + 2 * hd + 3 * d * mlp_width + 2 * d  # + q/k-norm, MLP, two RMSNorms


def test_halo_4_5b_on_meta_follows_released_layout():
    cfg = load_config('halo-4.5b')
    with torch.device('meta'):
        model = HaloModel(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {  # halo-checkpoint-layout.md
        'language_model.model.embed_tokens.weight': (151936, 1536),
        'language_model.lm_head.weight': (151936, 1536),
        'language_model.model.layers.27.self_attn.k_proj_moe_act.bias': (256,),
        'language_model.model.layers.0.self_attn.q_norm_moe_gen.weight': (128,),
        'language_model.model.layers.5.mlp_moe_act.down_proj.weight': (1536, 8960),
        'language_model.model.norm_moe_act.weight': (1536,),
        'vit_model.vision_model.embeddings.patch_embedding.weight': (1152, 588),
        'vit_model.vision_model.embeddings.position_embedding.weight': (4900, 1152),
        'vit_model.vision_model.encoder.layers.25.mlp.fc1.weight': (4304, 1152),
        'vit_model.vision_model.post_layernorm.bias': (1152,),
        'connector.fc1.weight': (1536, 1152),
        'vit_pos_embed.pos_embed': (4900, 1536),
        'latent_pos_embed.pos_embed': (4096, 1536),
        'time_embedder.mlp.0.weight': (1536, 256),
        'vae2llm.weight': (1536, 64),
        'input_linear_layer.weight': (1536, 14),
        'output_linear_layer.weight': (14, 1536),
        'vae.decoder.up.3.upsample.conv.weight': (512, 512, 3, 3),
        'vae.encoder.down.1.block.0.nin_shortcut.weight': (256, 128, 1, 1),
    }
    for name, shape in expected.items():
        assert shapes.get(name) == shape, name
    assert 'vit_model.vision_model.encoder.layers.26.mlp.fc1.weight' not in shapes
    assert not any('o_proj' in k and k.endswith('bias') for k in shapes)
    assert not any('rotary' in k or 'inv_freq' in k for k in shapes)

    summary = summarize(shapes)
    groups = summary['groups']
    per_layer = _expert_params_per_layer(cfg.llm, cfg.llm.intermediate_size)
    for expert in ('und', 'gen', 'act'):
        assert groups[expert]['params'] == cfg.llm.num_layers * per_layer + cfg.llm.hidden_size
        assert groups[expert]['tensors'] == 14 * cfg.llm.num_layers + 1
    assert 4.35e9 < summary['language_model_params'] < 4.45e9  # "about 4.4 B"
    assert groups['vit']['tensors'] == 16 * 26 + 5
    assert sum(1 for k in shapes if not k.startswith('vae.')) == 1624  # ema.safetensors entries
    assert groups['vae']['tensors'] == 244


@pytest.mark.parametrize(
    'edit, field',
    [
        (lambda r: r['llm'].update(num_kv_heads=3), 'num_heads'),
        (lambda r: r['llm'].update(hidden_sise=128), 'hidden_sise'),
        (lambda r: r['llm'].pop('vocab_size'), 'vocab_size'),
        (lambda r: r['special_tokens'].update(action_end=5000), 'action_end'),
        (lambda r: r['vae'].update(ch=48), 'VAEConfig.ch'),
        (lambda r: r.update(action_dim=0), 'action_dim'),
        (lambda r: r['vit'].update(image_max_px=999), 'image_max_px'),
    ],
)
def test_config_validation_names_the_field(edit, field):
    raw = config_to_dict(load_config('halo-tiny'))
    edit(raw)
    with pytest.raises(ValueError, match=field):
        config_from_dict(raw)


def test_config_round_trip():
    cfg = load_config('halo-4.5b')
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert cfg.latent_downsample == 16 and cfg.patch_latent_dim == 64


def test_tiny_tokenizer_fits_halo_tiny():
    cfg = load_config('halo-tiny')
    tok = tokenizer_for(cfg)
    text = 'You are an embodied agent. Your task is to: pick up the red cube. Plan and act.'
    ids = tok.encode(text)
    assert tok.decode(ids) == text and max(ids) < cfg.special_tokens.im_start
    assert tok.encode('<|action_start|>') == [cfg.special_tokens.action_start]


def test_missing_special_tokens_are_added_in_release_order():
    base = build_tiny_tokenizer(['pick up the cube'] * 4, load_config('halo-tiny').special_tokens)
    # Drop the two action tokens, as a stock Qwen2.5 tokenizer lacks them.
    raw = json.loads(base.to_str())
    raw['added_tokens'] = [t for t in raw['added_tokens'] if 'action' not in t['content']]
    from tokenizers import Tokenizer

    tok = HaloTokenizer(Tokenizer.from_str(json.dumps(raw)))
    assert (tok.special.action_start, tok.special.action_end) == (1004, 1005)


def test_model_info_cli_keys_json():
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(['model', 'halo-tiny', '--keys', '--json']) == 0
    doc = json.loads(out.getvalue())
    model = HaloModel(load_config('halo-tiny'))
    assert doc['keys'] == {k: list(v.shape) for k, v in model.state_dict().items()}
    assert doc['total_params'] == sum(p.numel() for p in model.parameters())
    assert doc['config']['name'] == 'halo-tiny'


def test_model_info_reads_checkpoint_headers(saved):
    _, directory = saved
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(['model', str(directory), '--json']) == 0
    doc = json.loads(out.getvalue())
    assert doc['tensors'] == len(HaloModel(load_config('halo-tiny')).state_dict())


def test_fresh_init_predicts_zero_velocity():
    # The release zero-inits both flow heads, so an untrained model leaves the noise unchanged.
    model = HaloModel(load_config('halo-tiny'))
    model.init_weights(seed=0)
    norm = model.language_model.model.layers[0].input_layernorm_moe_act.weight
    assert torch.equal(norm, torch.ones_like(norm))
    cache = model.prefill([])
    noise = torch.randn(4, 14)
    assert torch.equal(model.sample_actions(cache, noise, num_steps=2), noise)


def test_init_experts_from_und_copies_every_twin():
    model = random_tiny(seed=5)
    model.init_experts_from_und()
    params = dict(model.named_parameters())
    twins = [n for n in params if '_moe_gen' in n or '_moe_act' in n]
    assert len(twins) == 2 * 29  # 14 per layer and the final norm, for gen and act
    for name in twins:
        source = name.replace('_moe_gen', '').replace('_moe_act', '')
        assert torch.equal(params[name], params[source]), name
