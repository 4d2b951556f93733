"""Efficiency measurement: per-stage timing, memory, KV-cache size and analytic FLOPs of LLaVA with pruning.

Timers live here, never in model code: each stage is timed by calling the model's public pieces
(the vision tower and its signal computation, the registry method's `select`, `mm_projector`,
`prepare_multimodal_inputs` on the tokens just projected, and the LLM: the stock forward with its KV
cache, or `LLMLoop.prefill`/`step` for in-LLM methods, one call per decoded token). No model piece is
copied or shadowed here; the original FasterVLM path is a labelled baseline of a different program. `python -m llava.bench --headline` measures
the headline ratios P1/P2/P3 side by side; see docs/PERFORMANCE.md.
"""
