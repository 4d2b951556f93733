"""The benchmark catalogue: one `Benchmark` record per benchmark, each next to its data converter.

`prepare_hf` (which converter, which lmms-lab dataset, which folder), `summarize` (paper columns, their
order, aliases) and the scripts (`python -m llava.eval.catalogue folder <bench>`) all read from here.
Records are listed in the paper's column order.
"""

from __future__ import annotations

from llava.eval.catalogue import gqa, llavabench, mmbench, mme, mmvet, pope, scienceqa, seed, textvqa, vizwiz, vqav2
from llava.eval.catalogue.record import Benchmark

RECORDS: tuple[Benchmark, ...] = (
    vqav2.RECORD, gqa.RECORD, vizwiz.RECORD, scienceqa.RECORD, textvqa.RECORD, pope.RECORD, mme.RECORD,
    mmbench.RECORD, mmbench.RECORD_CN, seed.RECORD, mmvet.RECORD, llavabench.RECORD,
)


def names() -> list[str]:
    """The catalogue keys, sorted."""
    return sorted(r.name for r in RECORDS)


def _index() -> dict[str, Benchmark]:
    """Every accepted spelling (name, alias, paper column; lower case) -> its record; a clash is an error."""
    index: dict[str, Benchmark] = {}
    for record in RECORDS:
        for key in {record.name, *record.aliases, *(c.lower() for c in record.columns)}:
            key = key.lower()
            if index.setdefault(key, record) is not record:
                raise ValueError(f"benchmark name {key!r} is claimed by both {index[key].name} and {record.name}")
    return index


def find(name: str) -> Benchmark | None:
    """The record a benchmark name, alias or paper column names (case-insensitive), or None."""
    return _index().get(name.strip().lower())


def get(name: str) -> Benchmark:
    """Like `find`, but an unknown name is an error listing the catalogue."""
    record = find(name)
    if record is None:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(names())}")
    return record


def paper_columns() -> tuple[str, ...]:
    """The paper table's columns, in paper order."""
    return tuple(c for r in RECORDS for c in r.columns)
