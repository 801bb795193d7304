"""The floor model and the `halo-ros bench` command."""

import json

import pytest

from halo_ros.engine.floor import H100_SXM, graph_costs, probe_cpu
from halo_ros.engine.graphs import GPU_PRECISION, GraphShapes
from halo_ros.engine.layout import PrefixLayout
from halo_ros.model.config import load_config


@pytest.fixture(scope='module')
def big():
    cfg = load_config('halo-4.5b')
    layout = PrefixLayout.for_model(cfg, cameras=3, image_hw=(240, 320))
    return cfg, GraphShapes(layout, 50), graph_costs(cfg, GraphShapes(layout, 50), GPU_PRECISION)


def test_action_step_cost_matches_the_hand_count(big):
    """anchors-model-trt.md §5(a): per expert 46.8 M params per layer; the step reads the act
    expert and the und expert (2 framing rows) and the prefix K/V, 50 + 2 rows attend."""
    cfg, shapes, costs = big
    llm, p = cfg.llm, shapes.layout.prefix_rows
    d, kv = llm.hidden_size, llm.num_kv_heads * llm.head_dim
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * llm.intermediate_size
    n = 52
    linear = 2 * per_layer * llm.num_layers * (50 + 2)
    attention = 4 * n * (p + n) * d * llm.num_layers
    assert costs['action_step'].flops == pytest.approx(linear + attention, rel=0.02)
    weights = 2 * per_layer * llm.num_layers * 2  # two experts, bf16
    kv_bytes = 2 * llm.num_layers * p * kv * 2
    assert costs['action_step'].bytes == pytest.approx(weights + kv_bytes, rel=0.02)
    assert costs['action_step'].bound(H100_SXM) == 'memory'
    # 5.4 GB at 3.35 TB/s: ~1.6 ms per faithful step (the anchor's 1.75 ms is at 3.0 TB/s)
    assert 1.4 < costs['action_step'].floor_ms(H100_SXM) < 1.8


def test_decode_step_is_memory_bound_and_reads_the_lm_head(big):
    cfg, _, costs = big
    lm_head = cfg.llm.vocab_size * cfg.llm.hidden_size * 2
    assert costs['decode_step'].bytes > 2.6e9 + lm_head
    assert costs['decode_step'].bound(H100_SXM) == 'memory'
    assert 0.9 < costs['decode_step'].floor_ms(H100_SXM) < 1.1  # anchor: ~1.03 ms at 3 TB/s


def test_cpu_probe_measures_positive_rates():
    spec = probe_cpu(seconds=0.05)
    assert spec.bandwidth_gb_s > 0.1 and all(v > 1e-4 for v in spec.peak_tflops.values())


def test_bench_command_reports_graphs_chunk_cycle_and_cached_speedup(tmp_path):
    from halo_ros.cli import main

    out = tmp_path / 'bench.json'
    argv = [
        'bench',
        '--backend',
        'torch',
        '--cameras',
        '1',
        '--chunk-length',
        '8',
        '--text-capacity',
        '96',
        '--decode-capacity',
        '4',
        '--subgoal-steps',
        '2',
        '--iters',
        '2',
        '--reason-iters',
        '1',
        '--threads',
        '1',
        '--json',
        str(out),
    ]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    whats = {r['what'] for r in result['rows']}
    assert {'vit', 'prefill', 'decode_step', 'subgoal_step', 'action_step', 'vae_decode'} <= whats
    assert 'action chunk (9 steps)' in whats and 'flow step, prefix recomputed' in whats
    assert any(w.startswith('reasoning cycle') for w in whats)
    chunk = next(r for r in result['rows'] if r['what'] == 'action chunk (9 steps)')
    assert chunk['p50_ms'] > 0 and chunk['measured/floor'] > 0
    assert result['device_spec']['name'] == 'cpu' and result['machine']['load_avg_1m'] >= 0
    assert set(result['graph_costs']) >= {'action_step', 'prefill'}
