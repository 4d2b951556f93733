"""A bad item met inside a DataLoader worker (`--num-workers N`) is printed as its own one-line message.

torch re-raises a worker's exception as "Caught ValueError in DataLoader worker process 0." followed by
the worker's whole traceback; `one_line` used to join all of it into one very long `error:` line."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from llava.cli_errors import one_line, run_main
from llava.image_io import ImageDecodeError


class _BadItem(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        if i == 1:
            try:
                raise ImageDecodeError("image /data/b.png: not a readable image file (Truncated File Read); check it")
            except ImageDecodeError as err:  # the drivers name the question around the image's own error
                raise ValueError(f"question q1: cannot read image 'b.png': {err}") from err
        return torch.zeros(1)


@pytest.fixture(scope="module")
def worker_error() -> ValueError:
    with pytest.raises(ValueError) as caught:
        list(DataLoader(_BadItem(), batch_size=1, num_workers=1))
    return caught.value


def test_a_worker_error_keeps_only_the_original_message(worker_error):
    err = worker_error
    assert "Original Traceback" in str(err)  # what torch hands over
    assert one_line(err) == ("question q1: cannot read image 'b.png': image /data/b.png: not a readable image file "
                             "(Truncated File Read); check it")


def test_run_main_prints_it_as_one_error_line(worker_error, capsys):
    def main(argv):
        raise worker_error

    with pytest.raises(SystemExit) as done:
        run_main(main, [])
    assert done.value.code == 2
    assert capsys.readouterr().err == ("error: question q1: cannot read image 'b.png': image /data/b.png: not a "
                                       "readable image file (Truncated File Read); check it\n")


def test_other_messages_are_unchanged():
    assert one_line(ValueError("Caught my breath\nsecond line")) == "Caught my breath; second line"
