"""HALO inference engine: static graphs, ONNX export, backends, benchmarks.

- `interface`: the `Engine` ABC the runtime talks to (act / reason / info).
- `layout`: the static prefix layout (fixed regions, segment ids, key mask) all graphs share.
- `graphs`: the six graphs (+ `action_step_vjp`) as static-shape torch modules, precisions.
- `onnx_export`: one ONNX file per graph + manifest.json (`halo-ros export`: `export_cmd`).
- `graph_engine`: the act / reason pipeline over a `runner.GraphRunner`, written once.
- `runner` (torch, CUDA graphs), `ort_runner` (onnxruntime), `trt_runner` (TensorRT,
  `halo-ros build-engine`: `build_engine_cmd`).
- `torch_engine`: the eager segment-by-segment reference engine.
- `loading`: `EngineConfig` and `load_engine` (backend selection).
- `floor`, `bench`: the physical floor per graph and `halo-ros bench`.
"""
