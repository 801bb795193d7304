"""Model configuration: frozen dataclasses loaded from `models/*.yaml`, validated field by field."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from halo_ros.paths import share_dir

logger = logging.getLogger(__name__)


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ValueError(f'{type(obj).__name__}.{name} must be positive, got {value!r}')


@dataclass(frozen=True)
class LLMConfig:
    """Qwen2-style decoder; every layer holds three experts (und, gen, act) of this size."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int  # GQA: each kv head serves num_heads // num_kv_heads query heads
    intermediate_size: int  # SwiGLU width of the und and gen experts
    act_intermediate_size: int  # released: intermediate_size * action_expert_mlp_ratio (1.0)
    rope_theta: float = 1_000_000.0  # Qwen2.5
    rms_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        _positive(
            self,
            'vocab_size',
            'hidden_size',
            'num_layers',
            'num_heads',
            'num_kv_heads',
            'intermediate_size',
            'act_intermediate_size',
            'rope_theta',
            'rms_norm_eps',
        )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f'LLMConfig.hidden_size {self.hidden_size} is not divisible by '
                f'num_heads {self.num_heads}'
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f'LLMConfig.num_heads {self.num_heads} is not divisible by '
                f'num_kv_heads {self.num_kv_heads}'
            )
        if self.head_dim % 2:
            raise ValueError(f'LLMConfig head_dim {self.head_dim} must be even for RoPE')

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class ViTConfig:
    """SigLIP vision tower in NaViT form (patch conv stored as a Linear over (ph, pw, c))."""

    hidden_size: int
    num_layers: int  # released: the SigLIP json's 27 minus the dropped last layer = 26
    num_heads: int
    intermediate_size: int
    patch_size: int = 14
    max_patches_per_side: int = 70  # position tables hold side**2 rows (980 px / 14)
    layer_norm_eps: float = 1e-6
    image_max_px: int = 980  # released ImageTransform(980, 378, 14)
    image_min_px: int = 378

    def __post_init__(self) -> None:
        _positive(
            self,
            'hidden_size',
            'num_layers',
            'num_heads',
            'intermediate_size',
            'patch_size',
            'max_patches_per_side',
            'layer_norm_eps',
            'image_max_px',
            'image_min_px',
        )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f'ViTConfig.hidden_size {self.hidden_size} is not divisible by '
                f'num_heads {self.num_heads}'
            )
        if self.image_max_px > self.patch_size * self.max_patches_per_side:
            limit = self.patch_size * self.max_patches_per_side
            raise ValueError(
                f'ViTConfig.image_max_px {self.image_max_px} exceeds patch_size * '
                f'max_patches_per_side = {limit}'
            )


@dataclass(frozen=True)
class VAEConfig:
    """FLUX autoencoder (x8 downsampling, GroupNorm with 32 groups)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    scale_factor: float = 0.3611  # FLUX ae: z = scale * (mean - shift)
    shift_factor: float = 0.1159
    image_max_px: int = 1024  # released ImageTransform(1024, 512, 16)
    image_min_px: int = 512

    def __post_init__(self) -> None:
        object.__setattr__(self, 'ch_mult', tuple(self.ch_mult))
        _positive(
            self,
            'ch',
            'num_res_blocks',
            'z_channels',
            'scale_factor',
            'image_max_px',
            'image_min_px',
        )
        if not self.ch_mult or any(m <= 0 for m in self.ch_mult):
            raise ValueError(f'VAEConfig.ch_mult must be positive ints, got {self.ch_mult!r}')
        if any((self.ch * m) % 32 for m in (1, *self.ch_mult)):
            raise ValueError(
                f'VAEConfig.ch {self.ch} x ch_mult {self.ch_mult} must give channel '
                'counts divisible by 32 (GroupNorm groups)'
            )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the framing tokens (released `add_special_tokens`); bos/eos wrap every text."""

    im_start: int
    im_end: int
    vision_start: int
    vision_end: int
    action_start: int
    action_end: int

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(
                    f'SpecialTokens.{f.name} must be a non-negative int, got {value!r}'
                )


@dataclass(frozen=True)
class HaloConfig:
    name: str
    llm: LLMConfig
    vit: ViTConfig
    vae: VAEConfig
    special_tokens: SpecialTokens
    action_dim: int = 14  # bimanual ALOHA joints (released ACTION_DIM)
    latent_patch_size: int = 2  # 2x2 latent pixels per gen token -> 64-d tokens
    max_latent_size: int = 64  # latent position table holds max_latent_size**2 rows
    timestep_freq_dim: int = 256  # sinusoid width fed to the timestep MLPs
    # HALO divides the sampled subgoal latent by 1.4 before reuse (inference/inferencer.py);
    # BAGEL has no such divisor. Kept because the released weights were tuned with it.
    subgoal_latent_divisor: float = 1.4
    tokenizer: str | None = None  # directory (relative to models/) holding tokenizer.json
    # Released robotwin/realworld datasets; the instruction is lower-cased without a final '.'.
    prompt_template: str = (
        'You are an embodied agent. Your task is to: {instruction}. Plan and act.'
    )

    def __post_init__(self) -> None:
        _positive(
            self,
            'action_dim',
            'latent_patch_size',
            'max_latent_size',
            'timestep_freq_dim',
            'subgoal_latent_divisor',
        )
        if self.timestep_freq_dim % 2:
            raise ValueError(
                f'HaloConfig.timestep_freq_dim must be even, got {self.timestep_freq_dim}'
            )
        ids = dataclasses.asdict(self.special_tokens)
        for token, token_id in ids.items():
            if token_id >= self.llm.vocab_size:
                raise ValueError(
                    f'special_tokens.{token} = {token_id} is outside vocab_size '
                    f'{self.llm.vocab_size}'
                )
        if len(set(ids.values())) != len(ids):
            raise ValueError(f'special_tokens ids must be distinct, got {ids}')
        if '{instruction}' not in self.prompt_template:
            raise ValueError('HaloConfig.prompt_template must contain {instruction}')

    @property
    def latent_downsample(self) -> int:
        """Image pixels per gen-token side (VAE x8 times the 2x2 patch = 16)."""
        return self.vae.downsample * self.latent_patch_size

    @property
    def patch_latent_dim(self) -> int:
        return self.latent_patch_size**2 * self.vae.z_channels

    def tokenizer_dir(self) -> Path | None:
        return None if self.tokenizer is None else models_dir() / self.tokenizer


def models_dir() -> Path:
    """`models/` of the source checkout or the installed share folder."""
    return share_dir() / 'models'


_SECTIONS = {'llm': LLMConfig, 'vit': ViTConfig, 'vae': VAEConfig, 'special_tokens': SpecialTokens}


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f'{where} must be a mapping, got {type(raw).__name__}')
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f'{where}: unknown field(s) {unknown}; known: {sorted(known)}')
    missing = sorted(
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in raw
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f'{where}: missing field(s) {missing}')
    return cls(**raw)


def config_from_dict(raw: dict[str, Any]) -> HaloConfig:
    raw = dict(raw)
    for key, cls in _SECTIONS.items():
        if key in raw:
            raw[key] = _build(cls, raw[key], key)
    return _build(HaloConfig, raw, 'config')


def config_to_dict(config: HaloConfig) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    out['vae']['ch_mult'] = list(out['vae']['ch_mult'])
    return out


def load_config(name_or_path: str | Path) -> HaloConfig:
    """Load `models/<name>.yaml` or an explicit YAML path."""
    preset = models_dir() / f'{name_or_path}.yaml'
    path = preset if preset.is_file() else Path(name_or_path)
    if not path.is_file():
        presets = sorted(p.stem for p in models_dir().glob('*.yaml'))
        raise FileNotFoundError(f'model config {name_or_path!r} not found; presets: {presets}')
    with open(path, encoding='utf-8') as f:
        raw = yaml.safe_load(f)
    try:
        return config_from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f'{path}: {e}') from e


__all__ = [
    'HaloConfig',
    'LLMConfig',
    'ViTConfig',
    'VAEConfig',
    'SpecialTokens',
    'load_config',
    'config_from_dict',
    'config_to_dict',
    'models_dir',
]
