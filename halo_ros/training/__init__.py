"""Training halo-tiny on annotated EM-CoT episodes (`halo-ros train`).

Modules: `data` (episodes in memory, sampled by tick), `autoencoder` (fit the VAE, encode the
subgoal images), `trainer` (the optimisation loop and the checkpoint), `command` (the CLI).
"""
