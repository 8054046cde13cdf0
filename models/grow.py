"""Growing a trained rate-distortion ssVAE (:mod:`models.rd`): a larger model that computes what
the trained one did, so training goes on from there (progressive growing, Karras et al. 2018;
``train_rd --grow``), and Adam's moments carried over to it.

Allowed changes:
- ``merge_blocks``: residual blocks after a level's merge (:class:`~models.rd_layers.ResBlock`
  starts at zero);
- ``enc_blocks``: residual blocks after a stage of the encoder trunk (the same identity start);
- ``context``: a checkerboard context for a level's latent (its output layer starts at zero);
- ``latent_channels``: more channels in a level's latent. The new channels start at zero (the
  posterior's output rows are zero), their prior predicts zero with the smallest scale, and the
  merge reads them through small random weights: zero times anything leaves the state and the
  renders as they were, while the gradient reaches the posterior's new rows through those
  weights. The rate is not quite unchanged unless ``floor_in_steps`` is on: the prior's floor is
  then 0.11 latent units (:func:`~models.rd_layers.scale_from_raw`), so a zero costs ~1e-5 bits
  up to q = q_max / 2 (quantization step >= 1), 0.03 bits at q = 6 and 0.8 at q = 9 (step 0.18);
- ``floor_in_steps`` (False -> True): the prior scale's floor becomes 0.11 quantization steps
  where a step is under one latent unit (q > q_max / 2). No weight changes and nothing at
  q <= q_max / 2 does; above it every prior scale is smaller by 0.11 (1 / step - 1) steps, which
  the model re-learns where that scale was above the floor.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .config import RDConfig
from .rd import LATENT_INIT_GAIN, RDSSVAE

#: a new latent channel's raw prior scale: softplus(-12) ~ 6e-6, so its scale is the floor
NEW_RAW_SCALE = -12.0

#: (dim, source index per new index or -1 for a new entry) of each reshaped tensor
IndexMaps = dict[str, tuple[int, list[int]]]


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
        for name in ("to_latent.2.weight", "to_latent.2.bias", "latent_gain.lin.weight", "latent_gain.lin.bias",
                     "latent_ungain.lin.weight", "latent_ungain.lin.bias"):
            maps[p + name] = (0, keep)
        for name in ("prior_table.weight", "prior_table.bias", "prior_head.weight", "prior_head.bias",
                     "ctx_head.weight", "ctx_head.bias"):
            maps[p + name] = (0, pair)
        maps[p + "ctx_net.0.weight"] = (1, keep)
        ctx = 0 if k == 0 else old.width
        maps[p + "merge.0.weight"] = (1, keep + [m0 + i for i in range(ctx)])
    return maps


def _embed(old: Tensor, fill: Tensor, dim: int, src: list[int]) -> Tensor:
    """``fill`` with ``old``'s entries placed along ``dim`` at the positions ``src`` names."""
    out = fill.clone()
    dst = [i for i, s in enumerate(src) if s >= 0]
    out.index_copy_(dim, torch.tensor(dst), old.index_select(dim, torch.tensor([src[i] for i in dst])))
    return out


def _new_entries(name: str, shape: torch.Size, old: Tensor, src: list[int], gen: torch.Generator) -> Tensor:
    """The starting values of a reshaped tensor's new entries (module docstring)."""
    fill = torch.zeros(shape, dtype=old.dtype)
    if name.endswith("merge.0.weight"):  # read the new (zero) channels through small random weights
        return torch.randn(shape, generator=gen, dtype=old.dtype) * float(old.std())
    if name.endswith("latent_gain.lin.bias"):
        return fill + math.log(LATENT_INIT_GAIN)
    if name.endswith(("prior_table.bias", "prior_head.bias")):
        m = len(src) // 2
        fill[m:] = NEW_RAW_SCALE
    return fill


def grow(model: RDSSVAE, changes: dict[str, Any], seed: int = 0) -> RDSSVAE:
    """``model`` with its config changed by ``changes`` (module docstring), keeping every trained
    weight; the grown model computes what ``model`` did (new latent channels: up to their rate)."""
    allowed = {"merge_blocks", "enc_blocks", "context", "latent_channels", "floor_in_steps"}
    if changes.get("floor_in_steps") is False and model.config.floor_in_steps:
        raise ValueError("--grow may switch floor_in_steps on, not off")
    if set(changes) - allowed:
        raise ValueError(f"--grow may change only {sorted(allowed)}, not {sorted(set(changes) - allowed)}")
    cfg = RDConfig.from_dict({**model.config.to_dict(), **changes})
    bigger = RDSSVAE(cfg)
    maps = latent_index_maps(model.config, cfg)
    gen = torch.Generator().manual_seed(seed)
    state = dict(model.state_dict())
    shapes = {n: t.shape for n, t in bigger.state_dict().items()}
    for name, (dim, src) in maps.items():
        if name in state:
            old = state[name]
            state[name] = _embed(old, _new_entries(name, shapes[name], old, src, gen), dim, src)
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
    first steps are small, not Adam's full-size first step)."""
    maps = latent_index_maps(old.config, new.config)
    old_index = {n: i for i, (n, _) in enumerate(old.named_parameters())}
    moved: dict[int, Any] = {}
    for i, (n, p) in enumerate(new.named_parameters()):
        if n not in old_index or old_index[n] not in state["state"]:
            continue
        s = dict(state["state"][old_index[n]])
        if n in maps:
            dim, src = maps[n]
            s["exp_avg"] = _embed(s["exp_avg"], torch.zeros(p.shape, dtype=s["exp_avg"].dtype), dim, src)
            v = s["exp_avg_sq"]
            s["exp_avg_sq"] = _embed(v, torch.full(p.shape, float(v.mean()), dtype=v.dtype), dim, src)
        moved[i] = s
    group = {**state["param_groups"][0], "params": list(range(len(list(new.parameters()))))}
    return {"state": moved, "param_groups": [group]}
