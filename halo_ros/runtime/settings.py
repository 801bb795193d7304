"""The policy's settings in one place: every parameter with its one default, and the mapping
from those flat values (the policy node's ROS parameters, `halo-ros eval` flags) to the
engine and runtime configs. Pure: no ROS, no torch.

A trained checkpoint's card (`training.yaml`) fills what it knows: the cameras it was trained
on, the instruction of its data, its longest thought (the reasoning budget), and whether it
learned to continue an executed prefix (seam mode `auto` then means `prefix`, training-time
real-time chunking, else `rtc`).
"""

from __future__ import annotations

from dataclasses import dataclass

from halo_ros.engine.loading import (
    DEFAULT_CAMERAS,
    EngineConfig,
    checkpoint_card,
    load_engine,
    require_backend,
    resolve_checkpoint,
)
from halo_ros.runtime.actor import ActorConfig
from halo_ros.runtime.observation import AssemblyConfig
from halo_ros.runtime.policy import PolicyConfig
from halo_ros.runtime.seam import DEFAULT_MAX_GUIDANCE, SeamMode, WeightSchedule

_ENGINE = EngineConfig()
_POLICY = PolicyConfig()

# name -> default. The policy node declares exactly these parameters; config/policy*.yaml
# override them per deployment.
POLICY_DEFAULTS: dict[str, object] = {
    'model': _ENGINE.model,  # preset under models/ or a YAML path
    'checkpoint': '',  # a folder with ema.safetensors, or its name under models/; '' = random
    'backend': _ENGINE.backend,  # torch | onnxruntime | tensorrt | remote
    'server': _ENGINE.server,  # backend remote: the `halo-ros serve` endpoint
    'server_key': '',  # remote over CURVE: the server's .key file
    'client_key': '',  # remote over CURVE: this robot's .key_secret file
    'insecure': False,  # remote: allow plaintext to a server beyond loopback (not advised)
    'jpeg_quality': 0,  # remote: 0 = raw frames, 1..100 = JPEG
    'remote_timeout_s': 1.0,  # remote: a chunk later than this is dropped
    'model_hash': '',  # remote: refuse a server with another model ('' = any)
    'device': _ENGINE.device,
    'seed': 0,
    'threads': _ENGINE.threads,  # torch and onnxruntime intra-op threads; 0: their default
    'image_width': _ENGINE.image_hw[1],  # what the cameras deliver
    'image_height': _ENGINE.image_hw[0],
    'chunk_length': _ENGINE.chunk_length,
    'flow_steps': _ENGINE.flow_steps,
    'control_rate_hz': 1.0 / ActorConfig.control_dt_s,  # chunk points are 1/rate apart
    'chunk_rate_hz': 1.0 / ActorConfig.chunk_period_s,  # at most this many chunks per second
    'seam_mode': 'auto',  # auto | prefix | rtc | hard | none (auto: prefix if trained for it)
    'max_guidance': DEFAULT_MAX_GUIDANCE,
    'rtc_schedule': ActorConfig.weight_schedule.value,  # linear | exp: RTC's soft weights
    'noise_scale': ActorConfig.noise_scale,  # the flow's starting noise, std (1 = HALO's)
    'reasoning': _POLICY.reasoning,
    'reasoning_period_s': _POLICY.reasoning_period_s,
    'subgoal': _POLICY.subgoal,
    'max_tokens': 0,  # 0: the checkpoint's longest thought + 16, else 64
    'cameras': '',  # comma-separated; '': the checkpoint's, else all three
    'instruction': _POLICY.instruction,
    'max_skew_ms': AssemblyConfig.max_skew_ms,
    'max_age_ms': AssemblyConfig.max_age_ms,
    'state_topic': '',  # '' = the two follower topics; else one 14-joint topic
    'diagnostics_rate_hz': 1.0,
}


@dataclass(frozen=True)
class PolicySettings:
    engine: EngineConfig
    policy: PolicyConfig
    values: dict  # every parameter as resolved (checkpoint path, seam mode, cameras)
    card: dict  # the checkpoint's training card ({} for random or released weights)


def resolve_seam(mode: str, card: dict) -> SeamMode:
    """'auto' -> prefix for a checkpoint trained with executed prefixes, else rtc."""
    if mode == 'auto':
        return SeamMode.PREFIX if card.get('max_prefix_steps', 0) > 0 else SeamMode.RTC
    try:
        return SeamMode(mode)
    except ValueError:
        modes = ['auto', *(m.value for m in SeamMode)]
        raise ValueError(f'seam_mode {mode!r} is not one of {modes}') from None


def policy_settings(values: dict | None = None) -> PolicySettings:
    """The engine and runtime configs for these parameter values (missing ones: defaults)."""
    unknown = set(values or {}) - set(POLICY_DEFAULTS)
    if unknown:
        raise ValueError(f'unknown policy parameters {sorted(unknown)}')
    v = {**POLICY_DEFAULTS, **(values or {})}
    v['checkpoint'] = resolve_checkpoint(v['checkpoint'])
    card = checkpoint_card(v['checkpoint'])
    cameras = tuple(c.strip() for c in v['cameras'].split(',') if c.strip())
    cameras = cameras or tuple(card.get('cameras', DEFAULT_CAMERAS))
    v['cameras'] = ','.join(cameras)
    seam = resolve_seam(v['seam_mode'], card)
    v['seam_mode'] = seam.value
    max_tokens = v['max_tokens'] or (card['max_thought_tokens'] + 16 if card else 64)
    v['instruction'] = v['instruction'] or card.get('instruction', '')
    image_hw = (int(v['image_height']), int(v['image_width']))
    engine = EngineConfig(
        model=v['model'],
        checkpoint=v['checkpoint'] or None,
        backend=v['backend'],
        device=v['device'],
        cameras=cameras,
        image_hw=image_hw,
        chunk_length=int(v['chunk_length']),
        flow_steps=int(v['flow_steps']),
        seed=int(v['seed']),
        server=v['server'],
        threads=int(v['threads']),
    )
    policy = PolicyConfig(
        assembly=AssemblyConfig(
            cameras=cameras,
            image_hw=image_hw,
            max_skew_ms=float(v['max_skew_ms']),
            max_age_ms=float(v['max_age_ms']),
        ),
        actor=ActorConfig(
            chunk_period_s=1.0 / float(v['chunk_rate_hz']),
            control_dt_s=1.0 / float(v['control_rate_hz']),
            seam=seam,
            max_guidance=float(v['max_guidance']),
            weight_schedule=WeightSchedule(v['rtc_schedule']),
            seed=int(v['seed']),
            noise_scale=float(v['noise_scale']),
            max_prefix_steps=card.get('max_prefix_steps'),
        ),
        reasoning=bool(v['reasoning']),
        reasoning_period_s=float(v['reasoning_period_s']),
        subgoal=bool(v['subgoal']),
        max_tokens=int(max_tokens),
        instruction=v['instruction'],
    )
    return PolicySettings(engine, policy, v, card)


def load_policy_engine(settings: PolicySettings):
    """The engine the settings describe: local (threads applied first) or remote."""
    v = settings.values
    if v['backend'] == 'remote':
        from halo_ros.transport.client import RemoteConfig, remote_engine
        from halo_ros.transport.security import ClientKeys

        if bool(v['server_key']) != bool(v['client_key']):
            raise ValueError('server_key and client_key go together (CURVE needs both)')
        keys = ClientKeys(v['client_key'], v['server_key']) if v['server_key'] else None
        return remote_engine(
            settings.engine,
            RemoteConfig(
                act_timeout_s=float(v['remote_timeout_s']),
                connect_timeout_s=30.0,
                jpeg_quality=int(v['jpeg_quality']),
                keys=keys,
                insecure=bool(v['insecure']),
                model_hash=v['model_hash'],
                control_period_s=settings.policy.actor.control_dt_s,
            ),
        )
    require_backend(v['backend'])  # before torch: a robot install says what to do instead
    if int(v['threads']) > 0:
        import torch

        torch.set_num_threads(int(v['threads']))

    return load_engine(settings.engine)
