"""A device that is not there, or a dtype the device cannot run, is refused before any weight is loaded."""

from __future__ import annotations

import pytest
import torch

from llava.model.builder import load_pretrained_model, resolve_device
from llava.model.device_checks import DeviceError, check_device, check_dtype


@pytest.fixture()
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_cuda_without_cuda_is_refused(no_cuda, tiny_path):
    with pytest.raises(DeviceError) as err:
        check_device("cuda")
    assert str(err.value) == (f"--device 'cuda': this machine has no cuda device (torch {torch.__version__}); "
                              f"use --device cpu, or auto to pick what is there")
    with pytest.raises(DeviceError, match="^--device 'cuda:0': this machine has no cuda device"):
        load_pretrained_model(tiny_path, device="cuda:0")
    assert resolve_device("auto") == "cpu"


def test_gpu_index_beyond_the_visible_ones(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError) as err:
        check_device("cuda:3")
    assert str(err.value) == "--device 'cuda:3': only 2 cuda device(s) visible (cuda:0..cuda:1); pick one of those"
    assert check_device("cuda:1") == torch.device("cuda", 1)


def test_mps_absent_and_bad_names(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError) as err:
        check_device("mps")
    assert str(err.value) == (f"--device 'mps': this machine has no mps device (torch {torch.__version__}); "
                              f"use --device cpu, or auto to pick what is there")
    with pytest.raises(DeviceError) as err:
        check_device("gpu0")
    assert str(err.value) == "--device 'gpu0' is not a device name; use cpu, cuda, cuda:N, mps or auto"
    assert check_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cpu_runs_every_dtype(dtype):
    """torch 2.13 on CPU runs Linear and SDPA in float16 and bfloat16, so neither is refused there."""
    check_dtype("cpu", dtype)


def test_dtype_that_does_not_run_is_refused(monkeypatch):
    def unsupported(*args, **kwargs):
        raise RuntimeError('"addmm_impl_cpu_" not implemented for \'Half\'\nmore detail')

    monkeypatch.setattr(torch.nn.functional, "linear", unsupported)
    with pytest.raises(DeviceError) as err:
        check_dtype("cpu", torch.float16)
    assert str(err.value) == ("--torch-dtype float16 does not run on cpu (\"addmm_impl_cpu_\" not implemented for "
                              "'Half'); use --torch-dtype float32")
    check_dtype("cpu", torch.float32)  # float32 is never probed
