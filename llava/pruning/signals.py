"""Registry of vision signals: what a pruning method may ask the vision tower for.

A signal is one function over the q/k tensors that the probe captured in the tower, plus the layers
it needs and which query rows. A method names signals in `needs`; the tower probes exactly the
layers those signals ask for and computes nothing else. A new signal is one `@register_signal`
function here and its test.

Outputs have the batch first and one patch axis (`patch_axis`), so bundles can be subset by image
and gathered by patch without knowing what each signal is. A per-image signal without a patch axis
(`patch_axis=None`, e.g. the [CLS] feature) is subset by image; a gather across images takes the
first gathered image's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from llava.probe import Captured, HeadGeometry, head_mean_rows, received_attention

Q_NONE, Q_PREFIX, Q_ALL = "none", "prefix", "all"


@dataclass
class SignalInputs:
    """What a signal function reads: the captured layers of one tower run.

    captured: tower layer -> Captured (q rows per the signal's `q_rows`, k [B, T, Hkv*Dh]);
    last: the selected layer (the last one run); prefix: tokens before the patches ([CLS]: 1, none: 0);
    hidden: [B, T, D] the selected layer's output, prefix tokens included (None when not handed over).
    """

    captured: dict[int, Captured]
    geometry: HeadGeometry
    last: int
    prefix: int
    hidden: torch.Tensor | None = None


@dataclass(frozen=True)
class SignalSpec:
    """A registered signal. layers(last) -> tower layers to probe; fn None: computed outside the tower."""

    name: str
    fn: Callable[[SignalInputs], torch.Tensor] | None
    layers: Callable[[int], list[int]]
    q_rows: str
    patch_axis: int | None
    needs_prefix: bool
    description: str
    from_hidden: bool = False  # reads `SignalInputs.hidden` (a slice: free to compute)


_SIGNALS: dict[str, SignalSpec] = {}


def register_signal(
    name: str,
    *,
    layers: Callable[[int], list[int]] = lambda last: [last],
    q_rows: str = Q_PREFIX,
    patch_axis: int | None = 1,
    needs_prefix: bool = False,
    external: bool = False,
    from_hidden: bool = False,
) -> Callable:
    """Decorator registering `fn(SignalInputs) -> Tensor` (batch first) as the signal `name`.

    external: computed outside the tower (the tower refuses it); from_hidden: reads the selected
    layer's hidden states rather than the probe's q/k.
    """
    if q_rows not in (Q_NONE, Q_PREFIX, Q_ALL):
        raise ValueError(f"signal {name!r}: q_rows must be one of {(Q_NONE, Q_PREFIX, Q_ALL)}")

    def wrap(fn: Callable) -> Callable:
        if name in _SIGNALS:
            raise ValueError(f"vision signal {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        _SIGNALS[name] = SignalSpec(name, None if external else fn, layers, q_rows, patch_axis, needs_prefix, doc,
                                    from_hidden)
        return fn

    return wrap


def signal_spec(name: str) -> SignalSpec:
    try:
        return _SIGNALS[name]
    except KeyError:
        raise ValueError(f"unknown vision signal {name!r}; known: {', '.join(sorted(_SIGNALS))}") from None


def known_signals() -> frozenset[str]:
    return frozenset(_SIGNALS)


@register_signal("cls_attn", needs_prefix=True)
def cls_attn(x: SignalInputs) -> torch.Tensor:
    """[B, N] head-mean attention of the [CLS] query over the patches at the selected layer."""
    cap = x.captured[x.last]
    return head_mean_rows(cap.q[:, :1], cap.k, x.geometry)[:, 0, x.prefix:]  # [B, 1, T] -> [B, N]


@register_signal("cls_attn_layers", layers=lambda last: list(range(last + 1)), patch_axis=2, needs_prefix=True)
def cls_attn_layers(x: SignalInputs) -> torch.Tensor:
    """[B, L, N] the [CLS] row of every tower layer up to the selected one (L = layers run)."""
    rows = [head_mean_rows(x.captured[i].q[:, :1], x.captured[i].k, x.geometry)[:, 0, x.prefix:]
            for i in range(x.last + 1)]
    return torch.stack(rows, dim=1)  # L x [B, N] -> [B, L, N]


@register_signal("keys", q_rows=Q_NONE)
def keys(x: SignalInputs) -> torch.Tensor:
    """[B, N, Dh] head-mean key vectors of the patches at the selected layer."""
    k = x.captured[x.last].k[:, x.prefix:]  # [B, N, Hkv*Dh]
    return k.view(*k.shape[:2], x.geometry.num_kv_heads, -1).mean(dim=2)  # [B, N, Hkv, Dh] -> [B, N, Dh]


@register_signal("mean_attn", q_rows=Q_ALL)
def mean_attn(x: SignalInputs) -> torch.Tensor:
    """[B, N] attention each patch receives at the selected layer, averaged over all queries and heads.

    Needs no [CLS] token (SigLIP, Qwen ViT); computed in query chunks, never as a full map.
    """
    cap = x.captured[x.last]
    return received_attention(cap.q, cap.k, x.geometry)[:, x.prefix:]  # [B, T] -> [B, N]


# How many tower layers `mean_attn_deep` averages (the selected one and those just before it).
DEEP_LAYERS = 4


def _deep_layers(last: int) -> list[int]:
    return list(range(max(0, last - DEEP_LAYERS + 1), last + 1))


@register_signal("mean_attn_deep", q_rows=Q_ALL, layers=_deep_layers)
def mean_attn_deep(x: SignalInputs) -> torch.Tensor:
    """[B, N] `mean_attn` averaged over the last DEEP_LAYERS tower layers run (fewer if the tower is shallower).

    One layer's received attention can be dominated by a few sink patches; averaging neighbouring
    layers is a cheap way to smooth that, at the cost of probing (all q rows of) more layers.
    """
    rows = [received_attention(x.captured[i].q, x.captured[i].k, x.geometry)[:, x.prefix:]
            for i in _deep_layers(x.last)]
    return torch.stack(rows).mean(dim=0)  # L x [B, N] -> [B, N]


@register_signal("pooled_query_attn", q_rows=Q_ALL)
def pooled_query_attn(x: SignalInputs) -> torch.Tensor:
    """[B, N] head-mean attention of the mean patch query over the patches at the selected layer.

    The q projection is affine, so the mean of the patches' queries is the query a token holding the
    patches' mean hidden state would ask: a [CLS]-like global row that needs no [CLS] token, one row
    per image.
    """
    cap = x.captured[x.last]
    pooled = cap.q[:, x.prefix:].mean(dim=1, keepdim=True)  # [B, T, H*Dh] -> [B, 1, H*Dh]
    return head_mean_rows(pooled, cap.k[:, x.prefix:], x.geometry)[:, 0]  # [B, 1, N] -> [B, N]


@register_signal("feature_norm", layers=lambda last: [], q_rows=Q_NONE, from_hidden=True)
def feature_norm(x: SignalInputs) -> torch.Tensor:
    """[B, N] L2 norm of each patch's feature at the selected layer (no attention at all; free to compute).

    High-norm patches are the ones ViTs use as global stores ("registers"); a ranking by norm keeps them.
    """
    if x.hidden is None:
        raise ValueError("vision signal 'feature_norm' needs the selected layer's hidden states "
                         "(pass hidden= to compute_signals)")
    return x.hidden[:, x.prefix:].float().norm(dim=-1)  # [B, N, D] -> [B, N]


# Signals that may stand in for [CLS] attention (`cls_stand_in`): one non-negative score per patch,
# computed by the tower without a [CLS] token.
CLS_STAND_INS = ("mean_attn", "mean_attn_deep", "pooled_query_attn", "feature_norm")
CLS_STAND_IN_ARG = "cls_stand_in"  # the method option naming it ("auto": the tower's own default)
STAND_IN_AUTO = "auto"


def check_stand_in(name: str) -> str:
    """`name` if it may stand in for [CLS] attention, else a ValueError listing those that may."""
    if name not in CLS_STAND_INS:
        raise ValueError(f"cls_stand_in={name!r}: must be one of {list(CLS_STAND_INS)} "
                         f"(or {STAND_IN_AUTO!r} for the tower's default)")
    return name


def stand_in_option(method_args: dict) -> str | None:
    """The stand-in a call's method options name (`cls_stand_in`), or None for 'auto' / not given."""
    name = method_args.get(CLS_STAND_IN_ARG, STAND_IN_AUTO)
    return None if name == STAND_IN_AUTO else check_stand_in(name)


def refuse_other_stand_in(method_args: dict, tower_default: str, family: str) -> None:
    """For towers that compute one stand-in only: a call naming another is a ValueError, not silently ignored."""
    stand_in = stand_in_option(method_args)
    if stand_in is not None and stand_in != tower_default:
        raise ValueError(f"{family}: cls_stand_in={stand_in!r} is not computed by this family's vision adapter "
                         f"(it gives {tower_default!r}); drop it from --pruning-args")


def stand_in_needs(needs, stand_in: str | None) -> frozenset[str]:
    """`needs` with `cls_attn` replaced by the signal `stand_in` (None: unchanged)."""
    needs = frozenset(needs)
    if stand_in is None or "cls_attn" not in needs:
        return needs
    return (needs - {"cls_attn"}) | {check_stand_in(stand_in)}


def hand_over_stand_in(values: dict, needs, stand_in: str | None) -> dict:
    """The computed `values` with the stand-in handed over under `cls_attn` (and dropped when not asked for)."""
    if stand_in is None or "cls_attn" not in needs:
        return values
    values = dict(values)
    values["cls_attn"] = values[stand_in]
    if stand_in not in needs:
        del values[stand_in]
    return values


@register_signal("scores", q_rows=Q_NONE, external=True)
def scores(x: SignalInputs) -> torch.Tensor:
    """[B, N] scores computed outside the tower (FastV's last-token attention inside the LLM)."""
    raise NotImplementedError  # external: never computed by a tower


@register_signal("cls_feature", layers=lambda last: [], q_rows=Q_NONE, patch_axis=None, needs_prefix=True,
                 from_hidden=True)
def cls_feature(x: SignalInputs) -> torch.Tensor:
    """[B, D] the [CLS] token's feature at the selected layer (VisionZip keeps it as a visual token)."""
    if x.hidden is None:
        raise ValueError("vision signal 'cls_feature' needs the selected layer's hidden states "
                         "(pass hidden= to compute_signals)")
    return x.hidden[:, 0]  # [B, T, D] -> [B, D]


@register_signal("projected", q_rows=Q_NONE, external=True)
def projected(x: SignalInputs) -> torch.Tensor:
    """[B, N, H] the projector's output for every patch: the LLM-input embeddings (DivPrune selects on them)."""
    raise NotImplementedError  # external: the model projects the features (see `llava_arch.add_projected`)


@register_signal("text_relevance", q_rows=Q_NONE, external=True)
def text_relevance(x: SignalInputs) -> torch.Tensor:
    """[B, N] mean cosine similarity of each patch's CLIP image embedding with its question's text embedding(s)."""
    raise NotImplementedError  # external: question dependent, the model computes it (`llava_arch.add_text_relevance`)


def tower_plan(needs: frozenset[str] | set[str], last: int, prefix: int) -> tuple[list[int], slice | None, bool]:
    """The tower layers to probe, the q rows to keep (None = all) and whether q is needed at all."""
    specs = [signal_spec(n) for n in sorted(needs)]
    for s in specs:
        if s.fn is None:
            raise ValueError(f"vision signal {s.name!r} is computed outside the vision tower")
        if s.needs_prefix and prefix < 1:
            raise ValueError(f"vision signal {s.name!r} needs a [CLS] token, which this vision tower lacks "
                             "(use 'mean_attn' or 'keys')")
    layers = sorted({i for s in specs for i in s.layers(last)})
    modes = {s.q_rows for s in specs}
    rows = None if Q_ALL in modes else slice(0, max(prefix, 1))
    return layers, rows, bool(modes - {Q_NONE})


def compute_signals(needs, captured: dict[int, Captured], geometry: HeadGeometry, last: int, prefix: int,
                    hidden: torch.Tensor | None = None) -> dict:
    """{name: tensor} for the signals in `needs` from one tower run's captured layers (and its output `hidden`)."""
    inputs = SignalInputs(captured, geometry, last, prefix, hidden)
    return {name: signal_spec(name).fn(inputs) for name in sorted(needs)}
