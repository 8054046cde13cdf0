"""Growing a trained rate-distortion ssVAE (:mod:`models.rd`): a larger model that computes what
the trained one did, so training goes on from there (progressive growing, Karras et al. 2018;
``train_rd --grow``), and Adam's moments carried over to it.

Allowed changes:
- ``merge_blocks``: residual blocks after a level's merge (:class:`~models.rd_layers.ResBlock`
  starts at zero);
- ``enc_blocks``: residual blocks after a stage of the encoder trunk (the same identity start);
- ``context``: a checkerboard context for a level's latent, or a checkerboard grown into four
  passes (0 -> 1 or 2, 1 -> 2; every new context network's output layer starts at zero, and the
  four-pass level's third pass is the checkerboard's second, so the first two passes code what the
  anchors did and the last two what the rest did, under the same priors);
- ``latent_channels``: more channels in a level's latent. The new channels start at zero (the
  posterior's output rows are zero), their prior predicts zero with the smallest scale, and the
  merge reads them through small random weights: zero times anything leaves the state and the
  renders as they were, while the gradient reaches the posterior's new rows through those
  weights. The rate is not quite unchanged unless ``floor_in_steps`` is on: the prior's floor is
  then 0.11 latent units (:func:`~models.rd_layers.scale_from_raw`), so a zero costs ~1e-5 bits
  up to q = q_max / 2 (quantization step >= 1), 0.03 bits at q = 6 and 0.8 at q = 9 (step 0.18);
- ``enc_width``: more channels in the encoder trunk (Net2Net-style widening, Chen et al. 2016).
  A new channel's incoming weights, bias and gain start at zero, so it is zero everywhere (GDN
  and the residual blocks keep a zero channel at zero, and no old channel's GDN reads it), and
  the next layer (the next stage, a posterior head) reads it through small random weights: the
  model computes exactly what it did, and the gradient reaches the new rows through those
  weights. Only the encoder changes, so decoding costs nothing more;
- a refinement level (``render_strides`` ... ``kernels`` with one more level, which renders x
  again, at a finer latent stride: ``add_level_changes``). The last level's render head is
  split: its first upsampling stage becomes the level's transition to the new latent stride, its
  other stages the new level's render head, and the new level's merge ends in a convolution that
  starts at zero. So the new level renders exactly what the last one did, and the last one keeps
  its render. Its posterior and prior start as a fresh level's (latents about one quantization
  step wide, not at zero: the channels grown at zero with a prior at its floor in session 13 never
  came alive), so it starts with a rate, which training turns off where it does not pay;
- ``floor_in_steps`` (False -> True): the prior scale's floor becomes 0.11 quantization steps
  where a step is under one latent unit (q > q_max / 2). No weight changes and nothing at
  q <= q_max / 2 does; above it every prior scale is smaller by 0.11 (1 / step - 1) steps, which
  the model re-learns where that scale was above the floor.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .config import RESIDUAL_BLOCK, RDConfig
from .rd import LATENT_INIT_GAIN, RDSSVAE

#: a new latent channel's raw prior scale: softplus(-12) ~ 6e-6, so its scale is the floor
NEW_RAW_SCALE = -12.0

#: How each reshaped tensor is built: steps (dim, source index per new index or -1 for a new
#: entry, how new entries start), applied in order (a weight's columns before its rows, so that
#: a new row is new in every column)
IndexMaps = dict[str, list[tuple[int, list[int], str]]]


def latent_index_maps(old: RDConfig, new: RDConfig) -> IndexMaps:
    """Where each entry of every tensor that a wider latent reshapes comes from (module docstring)."""
    maps: IndexMaps = {}
    for k, (m0, m1) in enumerate(zip(old.latent_channels, new.latent_channels)):
        if m1 == m0:
            continue
        if m1 < m0:
            raise ValueError(f"--grow may only add latent channels (level {k + 1}: {m0} -> {m1})")
        keep = list(range(m0)) + [-1] * (m1 - m0)
        pair = keep + [m0 + i for i in range(m0)] + [-1] * (m1 - m0)  # (mu | raw scale) halves
        p = f"levels.{k}."
        for name in ("to_latent.2.weight", "to_latent.2.bias", "latent_gain.lin.weight",
                     "latent_ungain.lin.weight", "latent_ungain.lin.bias"):
            maps[p + name] = [(0, keep, "zero")]
        maps[p + "latent_gain.lin.bias"] = [(0, keep, "latent_gain")]
        for name in ("prior_table.weight", "prior_head.weight", "ctx_head.weight", "ctx_head.bias"):
            maps[p + name] = [(0, pair, "zero")]
        for name in ("prior_table.bias", "prior_head.bias"):
            maps[p + name] = [(0, pair, "raw_scale")]
        maps[p + "ctx_net.0.weight"] = [(1, keep, "zero")]
        ctx = 0 if k == 0 else old.width
        maps[p + "merge.0.weight"] = [(1, keep + [m0 + i for i in range(ctx)], "random")]
    return maps


def encoder_index_maps(old: RDConfig, new: RDConfig) -> IndexMaps:
    """Where each entry of every tensor that a wider encoder trunk reshapes comes from (module
    docstring): new rows start at zero, new columns small and random."""
    c0, c1 = old.encoder_width, new.encoder_width
    if c1 == c0:
        return {}
    if c1 < c0:
        raise ValueError(f"--grow may only widen the encoder ({c0} -> {c1})")
    keep = list(range(c0)) + [-1] * (c1 - c0)
    maps: IndexMaps = {}
    for i in range(old.encoder_stages):
        maps[f"enc.{i}.weight"] = ([(1, keep, "random")] if i else []) + [(0, keep, "zero")]
        maps[f"enc.{i}.bias"] = [(0, keep, "zero")]
        maps[f"enc_gdn.{i}.beta"] = [(0, keep, "one")]
        maps[f"enc_gdn.{i}.gamma"] = [(1, keep, "zero"), (0, keep, "gdn_gamma")]
        maps[f"enc_gain.{i}.lin.weight"] = [(0, keep, "zero")]
        maps[f"enc_gain.{i}.lin.bias"] = [(0, keep, "zero")]
        for b in range(old.enc_blocks[i] if old.enc_blocks else 0):
            for c in ("c1", "c2"):
                maps[f"enc_res.{i}.{b}.{c}.weight"] = [(1, keep, "random"), (0, keep, "zero")]
                maps[f"enc_res.{i}.{b}.{c}.bias"] = [(0, keep, "zero")]
    for k in range(old.levels):
        ctx = 0 if k == 0 else old.width
        maps[f"levels.{k}.to_latent.0.weight"] = [(1, keep + [c0 + j for j in range(ctx)], "random")]
    return maps


def add_level_changes(model_config: RDConfig, channels: int, weight_before: float, kernel: int = 1,
                      residual: bool = False) -> dict[str, Any]:
    """The ``grow`` changes that add a refinement level after the last one: its latent at half the
    last one's latent stride with ``channels`` channels, rendering x (stride 1) with distortion
    weight 1, the last level's weight set to ``weight_before``, convolutions of ``kernel``;
    ``residual``: a residual level (``RDConfig.residual_last``) at the residual block's stride."""
    c = model_config
    if c.render_strides[-1] != 1 or c.latent_strides[-1] < 4:
        raise ValueError("a refinement level needs a last level rendering x from a latent stride >= 4")
    stride = RESIDUAL_BLOCK if residual else c.latent_strides[-1] // 2
    return {"render_strides": [*c.render_strides, 1], "latent_strides": [*c.latent_strides, stride], "residual_last": residual,
            "latent_channels": [*c.latent_channels, channels],
            "level_weights": [*c.level_weights[:-1], weight_before, 1.0],
            "context": [*c.context, 0] if c.context else [],
            "merge_blocks": [*c.merge_blocks, 0] if c.merge_blocks else [],
            "kernels": [*(c.kernels or [3] * c.levels), kernel]}


def _added_level(old: RDConfig, new: RDConfig) -> bool:
    """Whether ``new`` is ``old`` with one refinement level added (module docstring)."""
    if new.levels == old.levels:
        return False
    L = old.levels
    same = (new.render_strides[:L] == old.render_strides and new.latent_strides[:L] == old.latent_strides
            and new.latent_channels[:L] == old.latent_channels
            and (new.context or (0,) * new.levels)[:L] == (old.context or (0,) * L)
            and (new.merge_blocks or (0,) * new.levels)[:L] == (old.merge_blocks or (0,) * L)
            and tuple(new.kernel(k) for k in range(L)) == tuple(old.kernel(k) for k in range(L)))
    if old.residual_last:
        raise ValueError("--grow adds no level after a residual level")
    finer = new.latent_strides[L] * 2 == old.latent_strides[L - 1] or new.residual_last
    if new.levels != L + 1 or not same or new.render_strides[L] != 1 or not finer:
        raise ValueError("--grow may add one level, which refines x (render stride 1) at half the last latent stride "
                         "or as a residual level, and must keep every other level as it is")
    if (new.merge_blocks and new.merge_blocks[L]) or (new.context and new.context[L]):
        raise ValueError("an added level starts without residual blocks or a context (grow them afterwards)")
    return True


def _split_last_head(state: dict[str, Tensor], fresh: dict[str, Tensor], old: RDConfig, new: RDConfig) -> None:
    """In ``state`` (the old model's, with ``fresh`` the grown model's initial values): the copies
    of :func:`_split_head_sources` (level L - 1 keeps its whole head); level L's other weights are
    ``fresh``'s, a refinement level's merge ending in a convolution at zero."""
    L = old.levels
    for name, t in fresh.items():
        if name.startswith(f"levels.{L}."):
            state[name] = t
    for dst, src in _split_head_sources(old, new).items():
        if src in state:
            state[dst] = state[src]
    if not new.residual_last:
        for name in (f"levels.{L}.merge.2.weight", f"levels.{L}.merge.2.bias"):
            state[name] = torch.zeros_like(fresh[name])


def _split_head_sources(old: RDConfig, new: RDConfig) -> dict[str, str]:
    """For an added level: each copied parameter's name -> its source's name in ``old``: the last
    level's first render stage becomes its transition, and (a refinement level, not a residual
    one) its other stages the new level's render head. Empty when no level is added."""
    if new.levels != old.levels + 1:
        return {}
    L = old.levels
    stages = int(math.log2(old.latent_strides[L - 1] // old.render_strides[L - 1]))
    out: dict[str, str] = {}
    for part, trans in (("head", "trans"), ("head_gdn", "trans_gdn"), ("head_gain", "trans_gain")):
        for leaf in ("weight", "bias", "beta", "gamma", "lin.weight", "lin.bias"):
            out[f"levels.{L - 1}.{trans}.0.{leaf}"] = f"levels.{L - 1}.{part}.0.{leaf}"
            for i in range(1, 0 if new.residual_last else stages):
                out[f"levels.{L}.{part}.{i - 1}.{leaf}"] = f"levels.{L - 1}.{part}.{i}.{leaf}"
    return out


def _embed(old: Tensor, fill: Tensor, dim: int, src: list[int]) -> Tensor:
    """``fill`` with ``old``'s entries placed along ``dim`` at the positions ``src`` names."""
    out = fill.clone()
    dst = [i for i, s in enumerate(src) if s >= 0]
    out.index_copy_(dim, torch.tensor(dst), old.index_select(dim, torch.tensor([src[i] for i in dst])))
    return out


def _fill(kind: str, shape: list[int], old: Tensor, src: list[int], gen: torch.Generator) -> Tensor:
    """The starting values of a reshaped tensor's new entries (module docstring)."""
    fill = torch.zeros(shape, dtype=old.dtype)
    if kind == "random":  # read new (zero) channels through small random weights
        return torch.randn(shape, generator=gen, dtype=old.dtype) * float(old.std())
    if kind == "one":
        return fill + 1.0
    if kind == "latent_gain":
        return fill + math.log(LATENT_INIT_GAIN)
    if kind == "raw_scale":
        fill[len(src) // 2:] = NEW_RAW_SCALE
    if kind == "gdn_gamma":  # a new channel normalised by itself alone, as a fresh GDN
        for j, s in enumerate(src):
            if s < 0:
                fill[j, j] = 0.1
    return fill


def _reshape(t: Tensor, steps: list[tuple[int, list[int], str]],
             new_entries: Callable[[str, list[int], Tensor, list[int]], Tensor]) -> Tensor:
    """``t`` grown by ``steps``, its new entries from ``new_entries(kind, shape, t, src)``."""
    for dim, src, kind in steps:
        shape = list(t.shape)
        shape[dim] = len(src)
        t = _embed(t, new_entries(kind, shape, t, src), dim, src)
    return t


def _constant(value: float) -> Callable[[str, list[int], Tensor, list[int]], Tensor]:
    """New entries that all start at ``value`` (Adam's moments of a reshaped parameter)."""
    return lambda kind, shape, t, src: torch.full(shape, value, dtype=t.dtype)


def index_maps(old: RDConfig, new: RDConfig) -> IndexMaps:
    """Every reshaped tensor's steps, for a wider latent and a wider encoder at once."""
    return {**latent_index_maps(old, new), **encoder_index_maps(old, new)}


def grow(model: RDSSVAE, changes: dict[str, Any], seed: int = 0) -> RDSSVAE:
    """``model`` with its config changed by ``changes`` (module docstring), keeping every trained
    weight; the grown model computes what ``model`` did (new latent channels: up to their rate)."""
    allowed = {"merge_blocks", "enc_blocks", "context", "latent_channels", "floor_in_steps", "enc_width",
               "render_strides", "latent_strides", "level_weights", "kernels", "residual_last"}
    if changes.get("floor_in_steps") is False and model.config.floor_in_steps:
        raise ValueError("--grow may switch floor_in_steps on, not off")
    if any(c < o for c, o in zip(changes.get("context", ()), model.config.context or ())):
        raise ValueError("--grow may add or extend a level's context, not remove or shrink it")
    if set(changes) - allowed:
        raise ValueError(f"--grow may change only {sorted(allowed)}, not {sorted(set(changes) - allowed)}")
    cfg = RDConfig.from_dict({**model.config.to_dict(), **changes})
    added = _added_level(model.config, cfg)
    if not added and (cfg.render_strides, cfg.latent_strides, cfg.level_weights) != (
            model.config.render_strides, model.config.latent_strides, model.config.level_weights):
        raise ValueError("--grow changes the strides or level weights only to add a refinement level")
    if not added and cfg.kernels and tuple(cfg.kernel(k) for k in range(cfg.levels)) != tuple(
            model.config.kernel(k) for k in range(cfg.levels)):
        raise ValueError("--grow may not change a level's kernel")
    with torch.random.fork_rng():  # a new level's fresh weights: the same for a model and its EMA copy
        torch.manual_seed(seed)
        bigger = RDSSVAE(cfg)
    maps = index_maps(model.config, cfg)
    gen = torch.Generator().manual_seed(seed)
    state = dict(model.state_dict())
    shapes = {n: t.shape for n, t in bigger.state_dict().items()}
    for name, steps in maps.items():
        if name in state:
            state[name] = _reshape(state[name], steps, functools.partial(_fill, gen=gen))
    if added:
        _split_last_head(state, bigger.state_dict(), model.config, cfg)
    for name, t in state.items():
        if name in shapes and shapes[name] != t.shape:
            raise ValueError(f"--grow {changes}: {name} would change shape without a rule for it")
    missing, unexpected = bigger.load_state_dict(state, strict=False)
    if unexpected or any(".merge_res." not in m and ".ctx_" not in m and not m.startswith("enc_res.") for m in missing):
        raise ValueError(f"--grow {changes} does not only add new blocks (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return bigger


def remap_optimizer_state(state: dict[str, Any], old: RDSSVAE, new: RDSSVAE) -> dict[str, Any]:
    """Adam's state of ``old``'s parameters moved to the same-named parameters of ``new``. New
    parameters start without moments; a reshaped one keeps its old entries' moments, and its new
    entries start with a zero first moment and the mean second moment of the old ones (so their
    first steps are small, not Adam's full-size first step); the stages copied from a split render
    head (a refinement level) take their source's moments, and the new level's other weights a
    zero first moment and the mean second moment of the same weight of the level before it."""
    maps = index_maps(old.config, new.config)
    old_index = {n: i for i, (n, _) in enumerate(old.named_parameters())}
    copied = _split_head_sources(old.config, new.config)
    moved: dict[int, Any] = {}
    added = f"levels.{old.config.levels}." if new.config.levels > old.config.levels else None
    v_all = [float(st["exp_avg_sq"].mean()) for st in state["state"].values() if "exp_avg_sq" in st] if added else []
    for i, (n, p) in enumerate(new.named_parameters()):
        n_old = copied.get(n, n)
        sibling = f"levels.{old.config.levels - 1}." + n[len(added):] if added and n.startswith(added) else ""
        if n_old not in old_index and sibling in old_index and old_index[sibling] in state["state"]:
            # a new level's own weights: no first moment, and its sibling's (the level before) mean
            # second moment, so that Adam's first steps follow the gradient's size instead of
            # moving every weight by the full learning rate (which fills the state with noise)
            src = state["state"][old_index[sibling]]
            moved[i] = {"step": src["step"], "exp_avg": torch.zeros_like(p),
                        "exp_avg_sq": torch.full_like(p, float(src["exp_avg_sq"].mean()))}
            continue
        if added and n.startswith(added) and n_old not in old_index and v_all:  # no sibling: the mean of all
            step = next(iter(state["state"].values()))["step"]
            moved[i] = {"step": step, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.full_like(p, sum(v_all) / len(v_all))}
            continue
        if n_old not in old_index or old_index[n_old] not in state["state"]:
            continue
        s = dict(state["state"][old_index[n_old]])
        if n in maps:
            s["exp_avg"] = _reshape(s["exp_avg"], maps[n], _constant(0.0))
            s["exp_avg_sq"] = _reshape(s["exp_avg_sq"], maps[n], _constant(float(s["exp_avg_sq"].mean())))
        moved[i] = s
    group = {**state["param_groups"][0], "params": list(range(len(list(new.parameters()))))}
    return {"state": moved, "param_groups": [group]}
