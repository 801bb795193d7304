"""Show a HALO model's config, parameter counts per expert and module, and (--keys) every tensor.

CONFIG_OR_CHECKPOINT is a preset name (halo-tiny, halo-4.5b), a config YAML, a `.safetensors`
file, or a directory holding ema.safetensors (and ae.safetensors). Configs are built on the meta
device, so nothing is allocated; checkpoints are read from their headers only.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

logger = logging.getLogger(__name__)

BF16_BYTES = 2
GROUPS = (
    'und',
    'gen',
    'act',
    'embed_tokens+lm_head',
    'vit',
    'connector',
    'gen_bridge',
    'action',
    'vae',
)


def group_of(name: str) -> str:
    """The released checkpoint's grouping of a tensor name (halo-checkpoint-layout.md)."""
    if name.startswith('language_model.'):
        if name.startswith(('language_model.model.embed_tokens', 'language_model.lm_head')):
            return 'embed_tokens+lm_head'
        if '_moe_gen' in name:
            return 'gen'
        if '_moe_act' in name:
            return 'act'
        return 'und'
    if name.startswith('vit_model.'):
        return 'vit'
    if name.startswith(('connector.', 'vit_pos_embed.')):
        return 'connector'
    if name.startswith(('time_embedder.', 'vae2llm.', 'llm2vae.', 'latent_pos_embed.')):
        return 'gen_bridge'
    if name.startswith(('action_time_embedder.', 'input_linear_layer.', 'output_linear_layer.')):
        return 'action'
    if name.startswith('vae.'):
        return 'vae'
    return 'other'


def shapes_from_config(config: str) -> tuple[dict, dict[str, tuple[int, ...]]]:
    import torch

    from halo_ros.model.config import config_to_dict, load_config
    from halo_ros.model.halo import HaloModel

    cfg = load_config(config)
    with torch.device('meta'):
        model = HaloModel(cfg)
    return config_to_dict(cfg), {k: tuple(v.shape) for k, v in model.state_dict().items()}


def shapes_from_checkpoint(path: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    from safetensors import safe_open

    from halo_ros.model.checkpoint import EMA_FILE, VAE_FILE

    files = [(path, '')] if path.is_file() else [(path / EMA_FILE, ''), (path / VAE_FILE, 'vae.')]
    shapes: dict[str, tuple[int, ...]] = {}
    for file, prefix in files:
        if not file.is_file():
            continue
        with safe_open(str(file), framework='pt') as f:
            for key in f.keys():  # noqa: SIM118
                shapes[prefix + key] = tuple(f.get_slice(key).get_shape())
    if not shapes:
        raise FileNotFoundError(f'no safetensors checkpoint at {path}')
    return {'checkpoint': str(path)}, shapes


def summarize(shapes: dict[str, tuple[int, ...]]) -> dict:
    counts: dict[str, int] = defaultdict(int)
    tensors: dict[str, int] = defaultdict(int)
    for name, shape in shapes.items():
        n = 1
        for s in shape:
            n *= s
        counts[group_of(name)] += n
        tensors[group_of(name)] += 1
    lm = sum(counts[g] for g in ('und', 'gen', 'act', 'embed_tokens+lm_head'))
    total = sum(counts.values())
    groups = {
        g: {'params': counts[g], 'tensors': tensors[g], 'bf16_bytes': counts[g] * BF16_BYTES}
        for g in (*GROUPS, 'other')
        if tensors[g]
    }
    return {
        'groups': groups,
        'language_model_params': lm,
        'total_params': total,
        'total_bf16_bytes': total * BF16_BYTES,
        'tensors': len(shapes),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('target', metavar='CONFIG_OR_CHECKPOINT')
    parser.add_argument('--keys', action='store_true', help='list every tensor name and shape')
    parser.add_argument('--json', action='store_true', help='machine-readable output')


def _bytes(n: float) -> str:
    for unit in ('B', 'kB', 'MB', 'GB'):
        if abs(n) < 1000:
            return f'{n:.2f} {unit}'
        n /= 1000
    return f'{n:.2f} TB'


def run(args: argparse.Namespace) -> int:
    path = Path(args.target)
    if path.suffix == '.safetensors' or path.is_dir():
        config, shapes = shapes_from_checkpoint(path)
    else:
        config, shapes = shapes_from_config(args.target)
    summary = summarize(shapes)
    out = sys.stdout
    if args.json:
        doc = {'config': config, **summary}
        if args.keys:
            doc['keys'] = {k: list(v) for k, v in shapes.items()}
        out.write(json.dumps(doc, indent=2) + '\n')
        return 0
    out.write(json.dumps(config, indent=2) + '\n\n')
    out.write(f'{"group":<22}{"tensors":>9}{"params":>16}{"bf16":>12}\n')
    for group, row in summary['groups'].items():
        out.write(
            f'{group:<22}{row["tensors"]:>9}{row["params"]:>16,}{_bytes(row["bf16_bytes"]):>12}\n'
        )
    out.write(f'{"language model":<22}{"":>9}{summary["language_model_params"]:>16,}\n')
    out.write(
        f'{"total":<22}{summary["tensors"]:>9}{summary["total_params"]:>16,}'
        f'{_bytes(summary["total_bf16_bytes"]):>12}\n'
    )
    if args.keys:
        out.write('\n')
        for name, shape in shapes.items():
            out.write(f'{name}\t{list(shape)}\n')
    return 0
