"""Attention analyses of the FasterVLM paper: attention shift and attention dispersion (docs/ANALYSIS.md).

- `llava.analysis.attn_shift`: how much attention each image token receives in every LLM layer,
  against the vision tower's [CLS] attention;
- `llava.analysis.attn_dispersion`: how concentrated the last prompt token's attention over the
  image is at one LLM layer, against the [CLS] attention;
- `llava.analysis.attention`: the per-image aggregates of the rows the attention probe computes from
  each decoder layer's own q/k (`llava.probe`), streamed one layer at a time;
- `llava.analysis.stats`: the pure statistics (cumulative share, mass shares, entropy, histograms).
"""
