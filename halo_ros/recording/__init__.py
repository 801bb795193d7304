"""Rollout recording: rosbag2 (MCAP) episodes, dataset export and EM-CoT annotation.

ROS-free: the recorder node hands raw CDR bytes to `EpisodeWriter`; everything else reads the
bags back with `rosbags`. Modules:

- `topics`: the default topic list and message types;
- `episode_meta`: episode metadata (instruction, robot, hashes, outcome) and its sidecar YAML;
- `episode_writer`: one bag per episode, a writer thread, drops by topic and reason, flushing;
- `recover`: salvage a bag whose writer was killed (no MCAP summary/footer);
- `episode_reader`: decode a bag into per-topic arrays with real stamps;
- `resample`: align streams on the control-rate grid;
- `lerobot_v3`, `aloha_hdf5`, `export_dataset`: dataset export;
- `primitives`, `emcot`, `annotate`: HALO's EM-CoT annotation;
- `bench`: recording benchmark.
"""
