"""FasterVLM: LLaVA with training-free visual-token pruning by [CLS] attention."""

__version__ = "0.1.0"
