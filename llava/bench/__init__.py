"""Efficiency measurement: per-stage timing, memory, KV-cache size and analytic FLOPs of LLaVA with pruning.

Timers live here, never in model code: each stage is timed by calling the model's public pieces
(the vision tower, the registry method's `select`, `mm_projector`, `prepare_multimodal_inputs`, the
LLM forward and a greedy decode loop with the KV cache). `python -m llava.bench --headline` measures
the headline ratios P1/P2/P3 side by side; see docs/PERFORMANCE.md.
"""
