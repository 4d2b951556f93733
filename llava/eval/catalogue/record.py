"""The catalogue record: everything the code knows about one benchmark, in one frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping


@dataclass(frozen=True)
class Benchmark:
    """One benchmark.

    name: the catalogue key, also the script name (scripts/v1_5/eval/<name>.sh) and `prepare_hf --benchmark`.
    aliases: other spellings accepted wherever a benchmark is named (lower case).
    converter: `convert(ctx)` building LLaVA's files from the lmms-lab dataset (`llava.eval.prepare_hf`).
    driver / scorer: the modules (dotted names) that answer the questions and score the answers.
    columns: the paper table column(s) the scorer's `--save-json` record fills (`llava.eval.summarize`).
    hub_id, split, config: the lmms-lab dataset and the split LLaVA-1.5 reports.
    folder: the data folder under playground/data/eval (LLaVA's layout).
    baselines: published K=576 headline per model, keyed "<model>/<column>" (EVAL.md, "Published numbers").
    """

    name: str
    aliases: tuple[str, ...]
    converter: Callable
    driver: str
    scorer: str
    columns: tuple[str, ...]
    hub_id: str
    split: str
    folder: str
    config: str | None = None
    baselines: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "baselines", MappingProxyType(dict(self.baselines)))

    def baseline(self, model: str, column: str | None = None) -> float | None:
        """The published headline of `model` (e.g. "LLaVA-1.5-7B") in `column` (default: the first one)."""
        return self.baselines.get(f"{model}/{column or self.columns[0]}")


def published(column: str, b7: float, b13: float) -> dict[str, float]:
    """LLaVA-1.5-7B and -13B at K = 576 in one paper column (LLaVA's MODEL_ZOO table, as EVAL.md quotes it)."""
    return {f"LLaVA-1.5-7B/{column}": b7, f"LLaVA-1.5-13B/{column}": b13}
