"""The benchmark catalogue: one `Benchmark` record per benchmark, each next to its data converter.

`prepare_hf` (which converter, which lmms-lab dataset, which folder), `summarize` (paper columns, their
order, aliases) and the scripts (`python -m llava.eval.catalogue folder <bench>`) all read from here.
Records are listed in the paper's column order. The video-QA benchmarks (`VIDEO_RECORDS`,
`llava.eval.catalogue.video_qa`) are found by the same names but kept out of the image table's records.
"""

from __future__ import annotations

from llava.eval.catalogue import (gqa, llavabench, mmbench, mme, mmvet, pope, scienceqa, seed, textvqa, video_qa,
                                  vizwiz, vqav2)
from llava.eval.catalogue.record import Benchmark
from llava.eval.catalogue.video_qa import VideoBenchmark

RECORDS: tuple[Benchmark, ...] = (
    vqav2.RECORD, gqa.RECORD, vizwiz.RECORD, scienceqa.RECORD, textvqa.RECORD, pope.RECORD, mme.RECORD,
    mmbench.RECORD, mmbench.RECORD_CN, seed.RECORD, mmvet.RECORD, llavabench.RECORD,
)

VIDEO_RECORDS: tuple[VideoBenchmark, ...] = video_qa.RECORDS  # TGIF-QA, MSVD-QA, MSRVTT-QA, ActivityNet-QA


def names() -> list[str]:
    """The image benchmarks' catalogue keys, sorted."""
    return sorted(r.name for r in RECORDS)


def video_names() -> list[str]:
    """The video-QA benchmarks' catalogue keys, sorted."""
    return sorted(r.name for r in VIDEO_RECORDS)


def is_video(name: str) -> bool:
    """True when `name` (a name, alias or column) is a video-QA benchmark."""
    return isinstance(find(name), VideoBenchmark)


def video_columns() -> tuple[str, ...]:
    """The video table's columns, in FasterVLM's order."""
    return tuple(r.columns[0] for r in VIDEO_RECORDS)


def _index() -> dict[str, Benchmark]:
    """Every accepted spelling (name, alias, paper column; lower case) -> its record; a clash is an error."""
    index: dict[str, Benchmark] = {}
    for record in (*RECORDS, *VIDEO_RECORDS):
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
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(names() + video_names())}")
    return record


def paper_columns() -> tuple[str, ...]:
    """The paper table's columns, in paper order."""
    return tuple(c for r in RECORDS for c in r.columns)
