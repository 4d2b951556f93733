"""`python -m llava.bench`: stage timings, FLOPs and the headline ratios (see docs/PERFORMANCE.md)."""

from .cli import main

if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
