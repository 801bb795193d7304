"""HALO (BAGEL Mixture-of-Transformers + action expert) in PyTorch, weight-compatible with the
released checkpoints (`qshou-coder/HALO`).

Modules (import what you need; this package file imports nothing so configs stay torch-free):
- `config`: `load_config('halo-tiny' | 'halo-4.5b' | path) -> HaloConfig`.
- `halo`: `HaloModel(cfg)`: the network, block builders and the exportable step functions
  `action_velocity`, `latent_velocity`, `text_logits`; API methods `prefill`, `decode_text`,
  `sample_subgoal`, `sample_actions`.
- `inference`: those four operations on a `cache.KVCache`, CFG (`Cfg`, `ActionCfg`).
- `guidance`: the `Guidance` protocol used by real-time chunking.
- `segments`: what `prefill` accepts. `preprocess`: release-equivalent image resizing.
- `training`: `forward_train` with the released masks and losses.
- `checkpoint`: released safetensors layout. `tokenizer`: Qwen2.5 / halo-tiny tokenizers.
- `info`: the `halo-ros model` command.
"""
