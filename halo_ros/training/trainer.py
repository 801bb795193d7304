"""Train HALO (halo-tiny) on annotated EM-CoT episodes and write a loadable checkpoint.

Each sample is laid out exactly as the engines lay out inference (`TorchEngine.act/reason`):

    [ViT image per camera] [prompt, no loss] [thought, CE] [goal latents x divisor, noisy: MSE]
    [goal latents, clean copy] [action chunk, noisy: L1]

Subgoal scale: the engine divides a sampled subgoal by `subgoal_latent_divisor` (1.4) before it
decodes it and before the action expert sees it. So the flow target is the encoded goal times
1.4 and the clean copy is the encoded goal itself: what the action expert trains on is what it
gets at inference, and the decoded subgoal is the goal image at its true scale.

Each sample carries `action_samples` noisy copies of its chunk (independent flow times and
noise, each its own noise split, so none sees another): more action signal per prefix. Each
copy starts with a random executed prefix of clean actions (training-time real-time chunking:
per-row flow time 0, no loss there), and the camera frames are randomly shifted by a few pixels.
Actions are trained raw (joint radians, grippers 0..1), as the release does, unless
`normalize_actions`: then per-joint (a - mean) / std over the demonstrations (`ActionNorm`, as
openpi and LeRobot do), the statistics written to the card for the engines. Optimiser steps
take `batch` samples in one packed pass (`forward_train_batch`); the checkpoint holds an EMA of the
weights, as the release's ema.safetensors does.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from halo_ros.model.action_norm import ActionNorm
from halo_ros.model.checkpoint import EMA_FILE, VAE_FILE, load_checkpoint, save_checkpoint
from halo_ros.model.config import load_config
from halo_ros.model.halo import HaloModel
from halo_ros.model.preprocess import vit_image
from halo_ros.model.tokenizer import tokenizer_for
from halo_ros.model.training import (
    TrainActions,
    TrainLatentImage,
    TrainOutput,
    TrainText,
    TrainViTImage,
    forward_train_batch,
)
from halo_ros.training.autoencoder import fit_autoencoder, goal_latents
from halo_ros.training.data import EmcotData, Sample, data_hash

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 'halo_ros.checkpoint/1'
TRAINING_FILE = 'training.yaml'
LOSS_LOG = 'losses.jsonl'
MAX_CHECKPOINT_BYTES = 20 * 1024 * 1024


class TrainConfigError(ValueError):
    """Settings that cannot train (e.g. continuing normalised weights on raw actions)."""


@dataclass(frozen=True)
class TrainConfig:
    model: str = 'halo-tiny'
    init: str | None = None  # continue from this checkpoint folder (its VAE is kept as it is)
    cameras: tuple[str, ...] = ('cam_high',)  # ACT's sim transfer-cube uses the top camera only
    goal_camera: str = 'cam_high'
    chunk_length: int = 50
    # Steps of the remaining plan in the thought (None = all, as HALO). halo-tiny's tokenizer
    # knows the template reasoning, so even a whole transfer plan is ~30 tokens.
    plan_steps: int | None = None
    steps: int = 100_000  # optimiser steps; whichever of steps / minutes ends first
    minutes: float = 40.0
    batch: int = 8  # samples per optimiser step (gradient accumulation)
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.998
    ce_weight: float = 1.0
    # CE weight of a thought's first token (the current subtask) relative to the others; 1 is
    # the released uniform mean. Everything the actions condition on follows from it.
    thought_lead_weight: float = 1.0
    # CE weight of the tokens that say where the object is (`<|object|>cube at 41,63`, in
    # grounded annotations): the start of an episode hangs on them.
    object_weight: float = 1.0
    mse_weight: float = 1.0
    l1_weight: float = 2.0  # the action loss is what closed-loop success depends on
    # The reasoning an action is conditioned on is as old as a reasoning cycle at inference (on
    # a CPU, 1-3 s while a subtask lasts ~1 s): this share of samples pairs the images and
    # actions of tick t with the thought and goal of a tick up to context_lag_s earlier.
    context_lag_s: float = 0.0
    context_lag_share: float = 0.5
    subgoal_dropout: float = 0.1  # share of samples without the subgoal (robust to a bad one)
    # Training-time real-time chunking: each noisy chunk copy gets an executed prefix of
    # d ~ U{0..max_prefix_steps} clean actions (flow time 0, no loss), so the model learns to
    # continue what the robot is already executing and seams need no guidance (seam: prefix).
    # A CPU policy's latency is ~0.3-0.6 s (15-30 steps); a GPU's 2-5 steps.
    max_prefix_steps: int = 25
    # Random shifts of the camera frames (pad by replication, crop back; DrQ, diffusion
    # policy): the cube is a few pixels at 160x120, and shifts keep the ViT from memorising.
    image_shift_px: int = 4
    # Ticks where no action moves for 0.2 s (waiting, the final hold) are drawn this much less.
    still_weight: float = 0.3
    # The first start_s of each episode (before the arm heads for the cube, which only the
    # cameras can tell) is drawn start_weight times as often: 1 = uniform, as the release.
    start_weight: float = 1.0
    start_s: float = 0.5
    # Independent noisy copies of the action chunk per sample: each is its own noise split
    # (hidden from the others, same RoPE id), so a second flow sample costs ~52 of ~800 rows.
    action_samples: int = 2
    # Train the flow on per-joint normalised actions (statistics of the data, or of --init's
    # card if it has them); False trains raw radians, as the release.
    normalize_actions: bool = False
    ae_steps: int = 400
    ae_minutes: float = 4.0
    ae_batch: int = 8
    ae_crop: int = 64
    threads: int = 1
    device: str = 'cpu'
    seed: int = 0
    log_every: int = 10
    save_every_minutes: float = 10.0


@dataclass
class TrainResult:
    out: Path
    steps: int
    seconds: float
    samples_per_s: float
    losses: dict[str, float] = field(default_factory=dict)


class Ema:
    """Exponential moving average of the trainable parameters (fp32), warmed up like
    timm/diffusers so early steps are not dominated by the random init."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().float().clone() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, self.params, strict=True):
            s.mul_(d).add_(p.detach().float(), alpha=1 - d)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange live and EMA weights (call twice to restore)."""
        for s, p in zip(self.shadow, self.params, strict=True):
            live = p.detach().float().clone()
            p.copy_(s.to(p.dtype))
            s.copy_(live)


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup, then cosine from lr to lr * min_lr_ratio over `progress` in [0, 1]."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cos = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)


def random_shift(image: np.ndarray, max_px: int, rng: np.random.Generator) -> np.ndarray:
    """The frame moved by up to max_px pixels each way (edges replicated), same size."""
    if max_px <= 0:
        return image
    h, w = image.shape[:2]
    padded = np.pad(image, ((max_px, max_px), (max_px, max_px), (0, 0)), mode='edge')
    dy, dx = rng.integers(0, 2 * max_px + 1, 2)
    return padded[dy : dy + h, dx : dx + w]


def sample_items(
    model: HaloModel,
    sample: Sample,
    goals: dict,
    grid: tuple[int, int],
    *,
    with_subgoal: bool = True,
    action_samples: int = 1,
    max_prefix_steps: int = 0,
    image_shift_px: int = 0,
    thought_lead_weight: float = 1.0,
    object_weight: float = 1.0,
    action_norm: ActionNorm | None = None,
    rng: np.random.Generator | None = None,
) -> list:
    vit = model.cfg.vit
    rng = rng or np.random.default_rng()
    items: list = [
        TrainViTImage(
            vit_image(
                random_shift(img, image_shift_px, rng),
                vit.image_max_px,
                vit.image_min_px,
                vit.patch_size,
            )
        )
        for img in sample.images.values()
    ]
    # A lagged context conditions the actions only: the thought and goal of an earlier tick are
    # not what the model should reason about these images (no CE, no subgoal target).
    items += [
        TrainText(sample.prompt_ids, loss=False),
        TrainText(
            sample.thought_ids,
            loss=not sample.lagged,
            lead_weight=thought_lead_weight,
            span_weight=None
            if sample.object_span is None
            else (*sample.object_span, object_weight),
        ),
    ]
    if with_subgoal:
        tokens = goals[sample.goal_key]
        divisor = model.cfg.subgoal_latent_divisor
        if not sample.lagged:
            items.append(TrainLatentImage(tokens * divisor, grid, noisy=True))
        items.append(TrainLatentImage(tokens, grid, noisy=False))
    chunk = sample.actions if action_norm is None else action_norm.normalize(sample.actions)
    actions = torch.from_numpy(chunk)
    longest = min(max_prefix_steps, len(actions) - 1)
    items += [
        TrainActions(actions, prefix=int(rng.integers(longest + 1)) if longest > 0 else 0)
        for _ in range(action_samples)
    ]
    return items


def trainable(model: HaloModel) -> list[torch.nn.Parameter]:
    """Everything but the VAE, which is fitted in its own stage and then frozen."""
    return [p for n, p in model.named_parameters() if not n.startswith('vae.')]


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in params if p.ndim >= 2]  # no weight decay on norms and biases
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW(
        [
            {'params': decay, 'weight_decay': cfg.weight_decay},
            {'params': no_decay, 'weight_decay': 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )


def train_step(
    model: HaloModel,
    params: list[torch.nn.Parameter],
    opt: torch.optim.Optimizer,
    batch: list[list],
    cfg: TrainConfig,
    *,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, list[float]], float]:
    """One optimiser step over `batch` samples (lists of TrainItems), run as one packed pass
    (`forward_train_batch`: attention per sample, everything else batched).
    -> (per-sample losses by name, gradient norm before clipping)."""
    opt.zero_grad(set_to_none=True)
    losses: dict[str, list[float]] = {'ce': [], 'mse': [], 'l1': [], 'obj': []}
    results: list[TrainOutput] = forward_train_batch(model, batch, generator=generator)
    total = sum(r.total(cfg.ce_weight, cfg.mse_weight, cfg.l1_weight) for r in results)
    (total / len(batch)).backward()
    for result in results:
        for k, name in (('ce', 'ce'), ('mse', 'mse'), ('l1', 'l1'), ('obj', 'span_ce')):
            value = getattr(result, name)
            if value is not None:
                losses[k].append(float(value.detach()))
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
    opt.step()
    return losses, grad_norm


def train(paths, out: str | Path, cfg: TrainConfig) -> TrainResult:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    model_cfg = load_config(cfg.model)
    tokenizer = tokenizer_for(model_cfg)
    data = EmcotData(
        paths,
        tokenizer,
        cameras=cfg.cameras,
        goal_camera=cfg.goal_camera,
        chunk_length=cfg.chunk_length,
        plan_steps=cfg.plan_steps,
        still_weight=cfg.still_weight,
        start_weight=cfg.start_weight,
        start_s=cfg.start_s,
    )
    digest = data_hash(data.folders)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    model = HaloModel(model_cfg)
    model.init_weights(seed=cfg.seed)
    if cfg.init:
        # More training on top of a checkpoint: same weights, VAE and goal latents; a fresh
        # optimiser (warmup again) and EMA. Its card is carried into the new one.
        report = load_checkpoint(model, Path(cfg.init) / EMA_FILE, Path(cfg.init) / VAE_FILE)
        logger.info('continuing from %s: %s', cfg.init, report.summary())
        ae = {'kept from': str(cfg.init)}
    model.to(device)
    if not cfg.init:
        ae = fit_autoencoder(
            model,
            lambda n: data.frames(cfg.goal_camera, n, rng),
            steps=cfg.ae_steps,
            seconds=cfg.ae_minutes * 60,
            batch=cfg.ae_batch,
            crop=cfg.ae_crop,
            seed=cfg.seed,
        )
    goals, grid, latent_stats = goal_latents(
        model, data.goal_frames(), model_cfg.subgoal_latent_divisor
    )

    lag = round(cfg.context_lag_s * data.fps)
    norm = training_action_norm(cfg, data)
    params = trainable(model)
    opt = make_optimizer(params, cfg)
    ema = Ema(params, cfg.ema_decay)
    model.train()
    model.vae.eval()

    log_path = out / LOSS_LOG
    log_file = open(log_path, 'w')  # noqa: SIM115 (kept open for the whole run)
    seconds = cfg.minutes * 60
    start = last_save = time.monotonic()
    window: dict[str, list[float]] = {'ce': [], 'mse': [], 'l1': [], 'obj': []}
    step, samples, last = 0, 0, {}

    def save() -> None:
        _save(
            model, ema, out, cfg, data, digest, step, start, samples, last, ae, latent_stats, norm
        )

    try:
        while step < cfg.steps and time.monotonic() - start < seconds:
            progress = max(step / cfg.steps, (time.monotonic() - start) / seconds)
            lr = lr_at(cfg, step, progress)
            for group in opt.param_groups:
                group['lr'] = lr
            batch = []
            for _ in range(cfg.batch):
                with_subgoal = float(rng.random()) >= cfg.subgoal_dropout
                batch.append(
                    sample_items(
                        model,
                        data.sample(rng, lag if float(rng.random()) < cfg.context_lag_share else 0),
                        goals,
                        grid,
                        with_subgoal=with_subgoal,
                        action_samples=cfg.action_samples,
                        max_prefix_steps=cfg.max_prefix_steps,
                        image_shift_px=cfg.image_shift_px,
                        thought_lead_weight=cfg.thought_lead_weight,
                        object_weight=cfg.object_weight,
                        action_norm=norm,
                        rng=rng,
                    )
                )
            losses, grad_norm = train_step(model, params, opt, batch, cfg, generator=gen)
            for k, v in losses.items():
                window[k].extend(v)
            ema.update(step)
            step += 1
            samples += cfg.batch
            if step % cfg.log_every == 0 or step == 1:
                elapsed = time.monotonic() - start
                last = {k: float(np.mean(v)) if v else float('nan') for k, v in window.items()}
                window = {k: [] for k in window}
                rate = samples / elapsed
                left = min((cfg.steps - step) * cfg.batch / rate, seconds - elapsed)
                logger.info(
                    'step %d  %.2f samples/s  %.2f s/step  ce %.3f  obj %.3f  mse %.3f  l1 %.3f  '
                    'lr %.2e  |g| %.2f  ETA %.1f min',
                    step,
                    rate,
                    elapsed / step,
                    last['ce'],
                    last['obj'],
                    last['mse'],
                    last['l1'],
                    lr,
                    grad_norm,
                    max(left, 0) / 60,
                )
                record = {'step': step, 'seconds': round(elapsed, 1), 'samples': samples}
                log_file.write(json.dumps({**record, **last, 'lr': lr, 'grad_norm': grad_norm}))
                log_file.write('\n')
                log_file.flush()
            if time.monotonic() - last_save > cfg.save_every_minutes * 60:
                save()
                last_save = time.monotonic()
    finally:
        log_file.close()
    save()
    elapsed = time.monotonic() - start
    return TrainResult(out, step, elapsed, samples / max(elapsed, 1e-9), last)


def training_action_norm(cfg: TrainConfig, data: EmcotData) -> ActionNorm | None:
    """The statistics the flow trains on: --init's (continuing keeps the space its weights
    learned), else the data's when `normalize_actions`, else None (raw). Taken through the card
    so training and the engines use the very same rounded numbers."""
    earlier = None
    if cfg.init:
        earlier = ActionNorm.from_card(yaml.safe_load((Path(cfg.init) / TRAINING_FILE).read_text()))
    if earlier is not None and not cfg.normalize_actions:
        raise TrainConfigError(
            f'{cfg.init} was trained on normalised actions (action_norm in its card): continue '
            'it with --normalize-actions'
        )
    if not cfg.normalize_actions:
        return None
    fitted = earlier or ActionNorm.fit([e.actions for e in data.episodes])
    return ActionNorm.from_card({'action_norm': fitted.to_card()})


def _save(model, ema, out, cfg, data, digest, step, start, samples, last, ae, latent_stats, norm):
    """Write the EMA weights, the VAE and training.yaml; fail loudly if the folder is too big."""
    ema.swap()
    try:
        save_checkpoint(model, out, dtype=torch.float32)  # tiny: fp32 costs ~8 MB, keeps accuracy
    finally:
        ema.swap()
    elapsed = time.monotonic() - start
    meta = {
        'format': CHECKPOINT_FORMAT,
        'model': cfg.model,
        'cameras': list(cfg.cameras),
        'subgoal_camera': cfg.goal_camera,
        'image_hw': [int(v) for v in data.image_hw],
        'chunk_length': cfg.chunk_length,
        'instruction': data.instruction,
        'max_thought_tokens': int(data.max_thought_tokens),
        'grounded': data.grounded,  # thoughts say where the object is (<|object|>)
        'plan_steps': cfg.plan_steps,
        # Seam modes the weights can follow: prefix only if trained with executed prefixes.
        'max_prefix_steps': cfg.max_prefix_steps,
        **({'action_norm': norm.to_card()} if norm is not None else {}),
        'subgoal': {
            'target': 'encoded goal x subgoal_latent_divisor; clean copy = encoded goal',
            **{k: round(v, 4) for k, v in latent_stats.items()},
        },
        'data': {
            'episodes': len(data.episodes),
            'ticks': data.ticks,
            'sha256': digest,
            'folders': [f.name for f in data.folders],  # the sha256 names their contents
        },
        'training': {
            'steps': step,
            'batch': cfg.batch,
            'samples': samples,
            'lr': cfg.lr,
            'seconds': round(elapsed, 1),
            'device': cfg.device,
            'threads': cfg.threads,
            'final_losses': {k: round(v, 5) for k, v in last.items() if not math.isnan(v)},
            'autoencoder': ae,
            'config': {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        },
    }
    if cfg.init:  # the card accounts for all the training these weights have had
        earlier = yaml.safe_load((Path(cfg.init) / TRAINING_FILE).read_text())['training']
        meta['training']['continued_from'] = earlier
        meta['training']['total_seconds'] = round(
            elapsed + earlier.get('total_seconds', earlier['seconds']), 1
        )
    (out / TRAINING_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    if size > MAX_CHECKPOINT_BYTES:
        raise RuntimeError(
            f'checkpoint {out} is {size / 2**20:.1f} MiB, over the '
            f'{MAX_CHECKPOINT_BYTES / 2**20:.0f} MiB limit'
        )
    logger.info('checkpoint at step %d: %s (%.1f MiB)', step, out, size / 2**20)
