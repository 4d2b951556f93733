"""Run `prepare_torchvision()` at interpreter start (a `.pth` line that scripts/make_vllm_env.sh writes).

vLLM imports transformers' image utilities, and through them torchvision, before any plugin of ours
can run, and it spawns worker processes that do the same; a `.pth` line is the one hook that runs
first in every process of that environment. It only declares torchvision's op schemas (see
`llava.torchvision_compat`); a failure is reported on stderr and leaves the interpreter usable.
"""

import sys

try:
    from llava.torchvision_compat import prepare_torchvision

    prepare_torchvision()
except Exception as err:  # never break interpreter start-up
    print(f"fastervlm: could not prepare torchvision ({type(err).__name__}: {err})", file=sys.stderr)
