"""Rollout recording: rosbag2 (MCAP) episodes, dataset export and EM-CoT annotation.

ROS-free: the recorder node hands raw CDR bytes to `EpisodeWriter`; everything else reads the
bags back with `rosbags`. Modules:

- `topics`: the default topic list and message types;
- `episode_meta`: episode metadata (instruction, robot, hashes, outcome) and its sidecar YAML;
- `episode_writer`: one bag per episode, a writer thread, drops by topic and reason, flushing;
  `write_queue` its bounded queue, `mcap_sink` the bag through rosbags (the only user of rosbags'
  writer internals), `episode_lock` the lock it holds on the folder while it writes;
- `recover`: salvage a bag whose writer was killed (no MCAP summary/footer), streamed by
  `mcap_scan` up to the first cut or damaged chunk; never a bag whose writer still holds its lock;
- `episode_reader`: decode a bag into per-topic arrays with real stamps;
- `resample`: align streams on the control-rate grid;
- `lerobot_v3`, `aloha_hdf5`, `export_dataset`: dataset export;
- `primitives`, `emcot`, `annotate`: HALO's EM-CoT annotation;
- `bench`: recording benchmark.

An episode on disk is a plain rosbag2 bag (`ros2 bag info <dir>` and MCAP tools open it):

    <output_dir>/<prefix>_<index>_<YYYYmmdd_HHMMSS>/
      <same name>.mcap   MCAP (ros2 profile, CDR), chunked at 1 MiB and at least every
                         flush_period_s; optional zstd chunk compression; log time = receive time
                         on the recorder's clock, header stamps untouched inside each message
      metadata.yaml      rosbag2 v9 (Jazzy): counts, RIHS01 type hashes, the publishers' offered
                         QoS, and custom_data `halo.*` (the episode metadata, flattened)
      episode.yaml       sidecar: EpisodeMeta (instruction, robot, calibration/model hashes,
                         outcome, reward, operator note, status, error, counts, drops, writer stats)
      .disk_reserve      only while recording: space kept to close the bag on a full disk
      .writer.lock       only while recording (or left by a killed recorder): flock held by the
                         writer, so recovery and export leave a live episode alone

Topics are recorded under their resolved names (`/cam_high/image_raw`, or
`/<namespace>/cam_high/image_raw`), plus `/halo/episode_meta` (std_msgs/String, the EpisodeMeta
JSON, once at start and once at stop). A bag without footer and metadata.yaml was left by a
killed recorder: `halo-ros recover-episodes <dir>` completes it (and refuses, exit 1, while a
recorder still writes it).
"""
