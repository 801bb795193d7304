"""The policy runtime, ROS-free: a slow reasoner and a fast actor sharing one engine.

- `observation`: assembles three cameras + follower joints into one `Observation` (skew, age,
  shape, finiteness checked; drops counted by reason).
- `context`: the versioned reasoning context and the instruction epoch.
- `reasoner` / `actor`: the slow and the fast loop (threads); `policy` composes them.
- `chunk`, `feedback`, `delay`, `seam`, `guidance`: stamped chunks, what the controller executed,
  delay estimation, and the seam modes (real-time chunking guided or trained in, hard
  inpainting, none).
- `seam_eval` + `smooth_flow`: the delay x seam-mode harness on a smooth analytic flow model
  (`halo-ros seam-eval`); `async_bench`: chunk cadence with and without reasoning
  (`halo-ros bench-policy`).

Only `guidance`, `smooth_flow` and the benchmarks import torch: the actor hands the engine a
numpy `SeamPlan`, and the local backends build their torch conditioning from it.
"""
