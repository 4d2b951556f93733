"""Pruning inside other libraries, each as a subclass or an entry point (never a patch).

`transformers_native`: FasterVLMLlava / FasterVLMLlavaProcessor, subclasses of transformers' LLaVA pair.
"""
