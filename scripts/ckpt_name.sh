# shellcheck shell=bash
# ckpt_name PATH: the model's name as LLaVA derives it, the last path part, or "<parent>_<checkpoint-N>".
# Sourced by the benchmark scripts' common.sh files; never run on its own.
ckpt_name() {
    local path="${1%/}" last parent
    last="${path##*/}"
    if [[ "$last" == checkpoint-* && "$path" == */* ]]; then
        parent="${path%/*}"
        last="${parent##*/}_${last}"
    fi
    printf '%s\n' "$last"
}
