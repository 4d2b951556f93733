"""Refuse a device that is not there, and a dtype that the device cannot run, before any weight is loaded.

`check_device("cuda:3")` raises when CUDA is absent or has fewer GPUs; `check_dtype(device, dtype)` runs
a tiny Linear + SDPA in that dtype on that device and raises if it fails (torch 2.13 on CPU runs
float16 and bfloat16 correctly, so they are allowed there), with what to use instead.
"""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device or dtype this machine cannot provide."""


def _available(kind: str) -> tuple[bool, int]:
    """(is the backend available, how many devices) for a torch device type."""
    if kind == "cuda":
        return torch.cuda.is_available(), torch.cuda.device_count()
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        ok = bool(mps and mps.is_available())
        return ok, int(ok)
    backend = getattr(torch, kind, None)
    if backend is not None and hasattr(backend, "is_available"):
        ok = bool(backend.is_available())
        return ok, int(backend.device_count()) if ok and hasattr(backend, "device_count") else int(ok)
    return False, 0


def check_device(device: str) -> torch.device:
    """The torch.device for `device`, or DeviceError when this machine does not have it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"--device {device!r} is not a device name; use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cpu":
        return dev
    ok, count = _available(dev.type)
    if not ok:
        raise DeviceError(f"--device {device!r}: this machine has no {dev.type} device (torch {torch.__version__}); "
                          f"use --device cpu, or auto to pick what is there")
    if dev.index is not None and dev.index >= count:
        raise DeviceError(f"--device {device!r}: only {count} {dev.type} device(s) visible "
                          f"({dev.type}:0..{dev.type}:{count - 1}); pick one of those")
    return dev


def check_dtype(device: str | torch.device, dtype: torch.dtype) -> None:
    """DeviceError when a tiny Linear + layer norm + exp in `dtype` fails or gives non-finite values on `device`."""
    if dtype == torch.float32:
        return
    dev = torch.device(device)
    if dev.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"--torch-dtype bfloat16: {torch.cuda.get_device_name(dev)} has no bfloat16 support; "
                          f"use --torch-dtype float16")
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 2, 8, 16, generator=gen)  # [B, heads, T, D]
        weight = torch.randn(16, 16, generator=gen)
        q = torch.nn.functional.linear(x.to(dev, dtype), weight.to(dev, dtype))
        out = torch.nn.functional.layer_norm(q, (16,)).exp()
        finite = bool(torch.isfinite(out.float()).all())
    except (RuntimeError, TypeError, NotImplementedError) as err:
        raise DeviceError(f"--torch-dtype {str(dtype).replace('torch.', '')} does not run on {dev} "
                          f"({str(err).splitlines()[0]}); use --torch-dtype float32") from None
    if not finite:
        raise DeviceError(f"--torch-dtype {str(dtype).replace('torch.', '')} gives non-finite values on {dev}; "
                          f"use --torch-dtype float32")
