"""What happens when a spliced prompt (text plus visual tokens) is longer than the model's context.

`prepare_multimodal_inputs` raises `ContextOverflowError` for such a row, or, only when truncation is
asked for (`truncate_prompts=True`, `--truncate-prompts`), cuts the row and warns with
`ContextOverflowWarning`. Both carry the row of the batch, its length and the limit, so the runner can
name the question.
"""

from __future__ import annotations


class ContextOverflowError(ValueError):
    """Row `row` of the batch holds `length` tokens, more than the context `limit`."""

    def __init__(self, row: int, length: int, limit: int) -> None:
        self.row, self.length, self.limit = row, length, limit
        super().__init__(f"prompt row {row}: {length} tokens (text and visual) exceed the model's context of {limit}; "
                         f"shorten the prompt or lower K, or pass truncate_prompts=True (--truncate-prompts)")


class ContextOverflowWarning(UserWarning):
    """Row `row` was cut from `length` to `limit` tokens because truncation was asked for."""

    def __init__(self, row: int, length: int, limit: int) -> None:
        self.row, self.length, self.limit = row, length, limit
        super().__init__(f"prompt row {row}: truncated from {length} to the model's context of {limit} tokens")
