"""Reading tensors out of checkpoint folders (the refusals are `checkpoint_checks`)."""

from __future__ import annotations

from pathlib import Path

import torch


def checkpoint_tensors(model_path: str, prefixes: str | tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Tensors whose names start with one of `prefixes`, from a folder's safetensors or .bin shards."""
    folder = Path(model_path)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    out: dict[str, torch.Tensor] = {}
    for file in files:
        if file.name.startswith("mm_projector"):
            continue  # a projector-only file is read by its own loader
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                out.update({k: f.get_tensor(k) for k in f.keys() if k.startswith(prefixes)})
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
            out.update({k: v for k, v in state.items() if k.startswith(prefixes)})
    return out


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
