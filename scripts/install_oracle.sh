#!/usr/bin/env bash
# Install the original LLaVA implementation (llava-torch 1.2.2.post1 on transformers 4.37.2) into
# a side folder, used by the tests only as an independent numerical reference ("oracle").
# It never mixes with the project's environment: tests run it in a subprocess with PYTHONPATH set.
set -euo pipefail
dest="${1:-$(cd "$(dirname "$0")/.." && pwd)/.oracle}"
python -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$dest" \
    transformers==4.37.2 tokenizers==0.15.2 huggingface-hub==0.24.7 llava-torch==1.2.2.post1
# transformers 4.37's hub client imports `requests`, which the project's own stack no longer needs.
python -m pip install --quiet --disable-pip-version-check --upgrade --target "$dest" requests==2.32.3
echo "oracle installed in $dest"
