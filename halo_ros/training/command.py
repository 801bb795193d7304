"""Train halo-tiny on annotated EM-CoT episodes into a loadable checkpoint folder.

Example (2-core CPU, ~40 minutes):
    halo-ros train /work/data/emcot --out models/halo-tiny-transfer-cube --minutes 40
The folder gets ema.safetensors + ae.safetensors (released layout), training.yaml (cameras,
image size, instruction, data hash, final losses) and losses.jsonl; load it with
EngineConfig(checkpoint=folder).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    from halo_ros.training.trainer import TrainConfig

    d = TrainConfig()
    parser.add_argument('data', nargs='+', help='annotated episode folders, or folders of them')
    parser.add_argument('--out', default='models/halo-tiny-transfer-cube', help='checkpoint folder')
    parser.add_argument('--model', default=d.model, help='model preset or YAML')
    parser.add_argument('--init', default=None, help='continue training this checkpoint folder')
    parser.add_argument('--cameras', nargs='+', default=list(d.cameras), help='ViT input cameras')
    parser.add_argument('--goal-camera', default=d.goal_camera, help='camera of the subgoal image')
    parser.add_argument(
        '--plan-steps',
        type=int,
        default=d.plan_steps,
        help='steps of the remaining plan in the thought (default: all, as HALO)',
    )
    parser.add_argument(
        '--minutes',
        type=float,
        default=d.minutes,
        help='time budget of the main stage (the autoencoder stage comes before it)',
    )
    parser.add_argument('--steps', type=int, default=d.steps, help='optimiser steps at most')
    parser.add_argument('--batch', type=int, default=d.batch, help='samples per optimiser step')
    parser.add_argument('--lr', type=float, default=d.lr)
    parser.add_argument('--warmup-steps', type=int, default=d.warmup_steps)
    parser.add_argument('--ema-decay', type=float, default=d.ema_decay)
    parser.add_argument('--ce-weight', type=float, default=d.ce_weight, help='reasoning text')
    parser.add_argument(
        '--thought-lead-weight',
        type=float,
        default=d.thought_lead_weight,
        help="CE weight of a thought's first token (the current subtask); 1 = uniform",
    )
    parser.add_argument(
        '--object-weight',
        type=float,
        default=d.object_weight,
        help='CE weight of the tokens saying where the object is (grounded annotations)',
    )
    parser.add_argument('--mse-weight', type=float, default=d.mse_weight, help='subgoal latents')
    parser.add_argument('--l1-weight', type=float, default=d.l1_weight, help='action chunk')
    parser.add_argument(
        '--subgoal-dropout',
        type=float,
        default=d.subgoal_dropout,
        help='share of samples trained without the subgoal',
    )
    parser.add_argument(
        '--action-samples',
        type=int,
        default=d.action_samples,
        help='noisy copies of the action chunk per sample',
    )
    parser.add_argument(
        '--context-lag-s',
        type=float,
        default=d.context_lag_s,
        help='train actions on reasoning up to this old (a slow reasoner at inference)',
    )
    parser.add_argument(
        '--max-prefix-steps',
        type=int,
        default=d.max_prefix_steps,
        help='training-time RTC: executed prefixes of up to this many clean actions (0: off)',
    )
    parser.add_argument(
        '--image-shift-px',
        type=int,
        default=d.image_shift_px,
        help='random shift augmentation of the camera frames (0: off)',
    )
    parser.add_argument(
        '--still-weight',
        type=float,
        default=d.still_weight,
        help='sampling weight of ticks where nothing moves (1: uniform)',
    )
    parser.add_argument(
        '--start-weight',
        type=float,
        default=d.start_weight,
        help='sampling weight of the first --start-s of each episode, where only the cameras '
        'say where the object is (1: uniform)',
    )
    parser.add_argument('--start-s', type=float, default=d.start_s)
    parser.add_argument(
        '--normalize-actions',
        action='store_true',
        help='train the flow on per-joint (a - mean) / std, the statistics in the card '
        '(default: raw radians, as the release)',
    )
    parser.add_argument('--ae-steps', type=int, default=d.ae_steps, help='autoencoder steps')
    parser.add_argument(
        '--ae-minutes', type=float, default=d.ae_minutes, help='autoencoder time budget'
    )
    parser.add_argument('--threads', type=int, default=d.threads, help='torch CPU threads')
    parser.add_argument('--device', default=d.device, help="'cpu' or 'cuda'")
    parser.add_argument('--seed', type=int, default=d.seed)
    parser.add_argument('--log-every', type=int, default=d.log_every, help='steps between logs')


def run(args) -> int:
    from halo_ros.engine.loading import EngineConfig, build_model
    from halo_ros.training.data import DatasetError
    from halo_ros.training.trainer import TrainConfig, TrainConfigError, train

    cfg = TrainConfig(
        model=args.model,
        init=args.init,
        context_lag_s=args.context_lag_s,
        cameras=tuple(args.cameras),
        goal_camera=args.goal_camera,
        plan_steps=None if args.plan_steps is None or args.plan_steps < 0 else args.plan_steps,
        steps=args.steps,
        minutes=args.minutes,
        batch=args.batch,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        ema_decay=args.ema_decay,
        ce_weight=args.ce_weight,
        thought_lead_weight=args.thought_lead_weight,
        object_weight=args.object_weight,
        mse_weight=args.mse_weight,
        l1_weight=args.l1_weight,
        subgoal_dropout=args.subgoal_dropout,
        action_samples=args.action_samples,
        max_prefix_steps=args.max_prefix_steps,
        image_shift_px=args.image_shift_px,
        still_weight=args.still_weight,
        start_weight=args.start_weight,
        start_s=args.start_s,
        normalize_actions=args.normalize_actions,
        ae_steps=args.ae_steps,
        ae_minutes=args.ae_minutes,
        threads=args.threads,
        device=args.device,
        seed=args.seed,
        log_every=args.log_every,
    )
    try:
        result = train(args.data, args.out, cfg)
    except (DatasetError, TrainConfigError) as e:
        logger.error('%s', e)
        return 2
    # The checkpoint must load the way every engine loads it (strict).
    build_model(EngineConfig(model=cfg.model, checkpoint=str(result.out)))
    logger.info(
        'trained %d steps in %.0f s (%.2f samples/s); final %s -> %s',
        result.steps,
        result.seconds,
        result.samples_per_s,
        result.losses,
        result.out,
    )
    return 0
