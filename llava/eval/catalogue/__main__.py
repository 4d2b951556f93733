"""Print one field of a benchmark's catalogue record, for the shell scripts.

    python -m llava.eval.catalogue folder sqa        # scienceqa  (the data folder under playground/data/eval)
    python -m llava.eval.catalogue name sqa          # scienceqa  (the catalogue / prepare_hf name)
    python -m llava.eval.catalogue column mmbench    # MMB        (the paper column its score fills)
    python -m llava.eval.catalogue fields sqa        # scienceqa<TAB>scienceqa<TAB>SQA-IMG  (name, folder, column)
    python -m llava.eval.catalogue list              # every benchmark: name, folder, column(s)
    python -m llava.eval.catalogue video-fields msvd # msvd<TAB>GPT_Zero_Shot_QA/MSVD_Zero_Shot_QA<TAB>MSVD-QA<TAB>videos
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from llava.eval import catalogue

FIELDS = {
    "folder": lambda r: r.folder,
    "name": lambda r: r.name,
    "column": lambda r: r.columns[0],
    "driver": lambda r: r.driver,
    "scorer": lambda r: r.scorer,
    "hub-id": lambda r: r.hub_id,
    "fields": lambda r: f"{r.name}\t{r.folder}\t{r.columns[0]}",  # what scripts/v1_5/eval/common.sh reads
    # what scripts/video/eval/common.sh reads: name, folder, column, video folder
    "video-fields": lambda r: f"{r.name}\t{r.folder}\t{r.columns[0]}\t{_video_folder(r)}",
}


def _video_folder(record) -> str:
    if not isinstance(record, catalogue.VideoBenchmark):
        raise ValueError(f"{record.name} is not a video-QA benchmark; choose from {', '.join(catalogue.video_names())}")
    return record.video_folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("field", choices=[*FIELDS, "list"])
    parser.add_argument("benchmark", nargs="?", help="a benchmark name, alias or paper column")
    args = parser.parse_args(argv)
    if args.field == "list":
        for r in (*catalogue.RECORDS, *catalogue.VIDEO_RECORDS):
            print(f"{r.name}\t{r.folder}\t{','.join(r.columns)}")
        return 0
    if not args.benchmark:
        parser.error(f"{args.field} needs a benchmark name")
    try:
        print(FIELDS[args.field](catalogue.get(args.benchmark)))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
