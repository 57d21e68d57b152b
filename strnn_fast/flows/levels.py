r"""Level-scheduled inversion of a StrNN-conditioned step: every unit of the network computed once.

The plain inverse of an autoregressive step repeats ``x <- τ^{-1}(z; c(x))`` ``depth + 1`` times,
each a full pass of the conditioner (:mod:`strnn_fast.flows.autoregressive`). But a StrNN's masks
say exactly which inputs each unit reads, so each unit can be computed once, as soon as its
inputs are final:

* a variable of level L (the longest chain of parents above it has L edges) is final after
  stage L; the context is known from the start;
* a unit is *ready* at stage s = the latest stage at which one of its inputs becomes final
  (variables count as stage L + 1, the context as 0); every unit reads only units ready no later
  than itself, so with the units of each layer sorted by stage, the inputs of the stage-s units
  are a prefix of the previous layer;
* stage s computes, layer after layer, only the units ready at s (one dense block product of the
  rows of stage s against that prefix), then the conditioner outputs of the level-s variables,
  and inverts the normalizer for those variables alone.

So a step costs about one forward pass in all, instead of ``depth + 1``. The answer is the
inverse the passes converge to (the same function, summed in another order: equal to rounding).
The blocks are cut once from the weights and cached until a parameter changes. On the CPU
(float32/float64) each stage's rows are a CSR block run by the C++ product of the "cpu" backend
(``csrc/masked_linear.cpp``), writing its rows in place; elsewhere they are dense blocks, and a
model whose dense blocks would exceed :data:`MAX_BLOCK_ENTRIES` keeps the passes.

Example:
    >>> import torch
    >>> from strnn_fast.flows import StrAF
    >>> flow = StrAF([("a", "b"), ("b", "c"), ("a", "c")], hidden_sizes=(16,), flow_steps=2)
    >>> for step in flow.steps:  # a flow away from the identity (the last layers start at zero)
    ...     last = step.conditioner.net.layers[-1]
    ...     last.set_weight(0.5 * torch.randn(last.out_features, last.in_features))
    >>> z = torch.randn(5, 3)
    >>> with torch.no_grad():
    ...     x = flow.inverse(z)
    ...     torch.allclose(flow.transform(x)[0], z, atol=1e-5)
    True
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .. import _C
from ..activations import ACTIVATIONS
from ..csr_ops import FUSED
from ..graph import levels

__all__ = ["LevelPlan", "MAX_BLOCK_ENTRIES", "level_plan", "traceable_plan"]

# Weight entries the cut-out blocks may hold in all (the blocks are dense: the rows of a stage
# against every earlier unit), about 64 MB in float32.
MAX_BLOCK_ENTRIES = 1 << 24


@dataclass(frozen=True)
class _Layer:
    """One masked layer cut by stage: rows [starts[s], starts[s + 1]) of the sorted units read the
    previous layer's sorted units ``columns[s]`` (a prefix length, or the indices of the prefix
    that the mask lets them read) through blocks[s] (+ biases[s])."""

    starts: list[int]
    columns: list[int | torch.Tensor]
    blocks: list[torch.Tensor]
    biases: list[torch.Tensor | None]
    activation: str
    # On the CPU (float32/float64) each stage's rows as a CSR block over the prefix instead:
    # (crow, col, values, bias) numpy arrays for the C++ product (csrc/masked_linear.cpp).
    csr: list[tuple] | None = None
    prefix: list[int] | None = None


# A stage's block keeps only the prefix columns its rows read when that drops at least half of them
# (a gather of those input columns then costs less than multiplying by the zeros).
_COMPACT_BELOW = 0.5

class LevelPlan:
    r"""The stage schedule of one :class:`~strnn_fast.flows.conditioners.StrNNConditioner`.

    Arguments:
        conditioner: a StrNNConditioner (its ``net`` is a FastStrNN on ``[x, context]``).
        device, dtype: where and in which dtype the blocks are cut.
        traceable: dense blocks and torch ops also on the CPU (no C++ products), for torch.export.
    """

    def __init__(self, conditioner: nn.Module, device: torch.device, dtype: torch.dtype, traceable: bool = False):
        d, k, c = conditioner.d, conditioner.n_params, conditioner.context_features
        self.on_cpu = not traceable and device.type == "cpu" and dtype in (torch.float32, torch.float64)
        level = levels(conditioner.adjacency)
        self.n_stages = int(level.max(initial=0)) + 1
        # Inputs: [x (d), context (C)]; x_j is final after stage level_j (ready at level_j + 1).
        ready = np.concatenate([level + 1, np.zeros(c, dtype=np.int64)])
        in_order = np.argsort(ready, kind="stable")
        # Stage s writes the level-s variables, which sit contiguous in the sorted inputs.
        self.var_order = torch.from_numpy(in_order[in_order < d])
        self.var_starts = [c + int(np.searchsorted(level[in_order[in_order < d]], s)) for s in range(self.n_stages + 1)]
        self.context_index = torch.from_numpy(in_order[:c] - d)  # all context inputs come first
        self.x_position = torch.from_numpy(np.argsort(in_order)[:d])  # sorted column of each variable
        self.layers: list[_Layer] = []
        order = in_order
        layers = list(conditioner.net.layers)
        for idx, layer in enumerate(layers):
            s = layer.csr(torch.device("cpu"))
            crow, col = s.crow.numpy(), s.col.numpy()
            counts = np.diff(crow)
            stage_of_input = ready  # the previous layer's stages, by unit index
            row_ready = np.zeros(layer.out_features, dtype=np.int64)
            nonempty = counts > 0
            if col.size:
                row_ready[nonempty] = np.maximum.reduceat(stage_of_input[col], crow[:-1][nonempty])
            if idx == len(layers) - 1:  # outputs p*d + i are computed when variable i is inverted
                sched = np.tile(level, k)
                assert np.all(row_ready <= sched), "masks read a variable that is not a parent"
            else:
                sched = row_ready
            out_order = np.argsort(sched, kind="stable")
            if idx == len(layers) - 1:
                # Within a stage: parameter-major, variables in var_order, so that a stage's output
                # block reshapes to (B, k, n_vars).
                rank = np.empty(d, dtype=np.int64)
                rank[in_order[in_order < d]] = np.arange(d)
                out_order = np.lexsort((rank[np.arange(k * d) % d], np.arange(k * d) // d, sched))
            starts = [int(np.searchsorted(sched[out_order], st)) for st in range(self.n_stages + 1)]
            prefix = [int(np.searchsorted(stage_of_input[order], st, side="right")) for st in range(self.n_stages)]
            if self.on_cpu:
                self.layers.append(_Layer(starts, [], [], [], layer.activation,
                                          _csr_blocks(layer, out_order, order, starts, dtype), prefix))
            else:
                self.layers.append(_dense_blocks(layer, out_order, order, starts, prefix, device, dtype))
            ready, order = sched, out_order
        self.k, self.d, self.c = k, d, c

    @staticmethod
    def entries(conditioner: nn.Module) -> int:
        """An upper bound on the block entries a plan of `conditioner` holds (rows x width of each layer)."""
        return sum(layer.out_features * layer.in_features for layer in conditioner.net.layers)

    def inverse(self, normalizer: nn.Module, z: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """x with ``normalizer(x, conditioner(x, context))[0] == z`` (to rounding), stage by stage."""
        b = z.shape[0]
        width = [self.d + self.c] + [lay.starts[-1] for lay in self.layers[:-1]]
        # Activations transposed, (units, batch), rows in each layer's stage order: a stage writes a
        # contiguous run of rows in place and reads a prefix (or a gather) of whole rows. Every row
        # is written before a stage reads it.
        acts = [z.new_empty(w, b) for w in width]
        if self.c:
            acts[0][: self.c] = context.to(z).T.index_select(0, self.context_index.to(z.device))
        var_order = self.var_order.to(z.device)
        last = len(self.layers) - 1
        views = [a.numpy() for a in acts] if self.on_cpu else None
        threads = torch.get_num_threads()
        for st in range(self.n_stages):
            h = None
            for idx, lay in enumerate(self.layers):
                lo, hi = lay.starts[st], lay.starts[st + 1]
                if hi == lo:
                    continue
                if views is not None:  # the C++ product of the stage's CSR block, written in place
                    out = acts[idx + 1][lo:hi] if idx < last else z.new_empty(hi - lo, b)
                    crow, col, vals, bias = lay.csr[st]
                    _C.csr_spmm(views[idx][: lay.prefix[st]], vals, crow, col, bias, lay.activation == "relu",
                                out.numpy(), threads)
                    if lay.activation not in FUSED:
                        _activate_(out, lay.activation)
                    if idx == last:
                        h = out
                    continue
                cols = lay.columns[st]
                inp = acts[idx][:cols] if isinstance(cols, int) else acts[idx].index_select(0, cols)
                w, bias = lay.blocks[st], lay.biases[st]
                out = acts[idx + 1][lo:hi] if idx < last else z.new_empty(hi - lo, b)
                if bias is None:
                    torch.mm(w, inp, out=out)
                else:
                    torch.addmm(bias.unsqueeze(1), w, inp, out=out)
                _activate_(out, lay.activation)
                if idx == last:
                    h = out
            v0, v1 = self.var_starts[st], self.var_starts[st + 1]
            if v1 == v0:
                continue
            n = v1 - v0
            params = h.view(self.k, n, b).permute(2, 1, 0)  # (B, n, k)
            zs = z.index_select(1, var_order[v0 - self.c: v1 - self.c])
            acts[0][v0:v1] = normalizer.inverse(zs, params).T
        return acts[0].index_select(0, self.x_position.to(z.device)).T.contiguous()


def _activate_(y: torch.Tensor, name: str) -> None:
    """Applies the activation `name` to `y` in place."""
    if name == "relu":
        y.clamp_min_(0.0)
    elif name != "identity":
        y.copy_(ACTIVATIONS[name](y))


def _dense_blocks(layer: nn.Module, out_order: np.ndarray, order: np.ndarray, starts: list[int], prefix: list[int],
                  device: torch.device, dtype: torch.dtype) -> _Layer:
    """Each stage's rows as a dense block against the columns they read (a prefix, or a gather)."""
    w = layer.dense_weight().detach().to(device=device, dtype=dtype)
    keep = layer.keep_mask("cpu").bool()
    b = None if layer.bias is None else layer.bias.detach().to(device=device, dtype=dtype)
    blocks, biases, columns = [], [], []
    for st in range(len(prefix)):
        rows = torch.from_numpy(out_order[starts[st]:starts[st + 1]])
        cols = torch.from_numpy(order[: prefix[st]])
        read = keep.index_select(0, rows).index_select(1, cols).any(0).nonzero().flatten()
        if read.numel() < _COMPACT_BELOW * prefix[st]:
            cols, used = cols[read], read.to(device)  # gather the columns read
        else:
            used = prefix[st]
        blocks.append(w.index_select(0, rows.to(device)).index_select(1, cols.to(device)).contiguous())
        biases.append(None if b is None else b.index_select(0, rows.to(device)))
        columns.append(used)
    return _Layer(starts, columns, blocks, biases, layer.activation)


def _csr_blocks(layer: nn.Module, out_order: np.ndarray, order: np.ndarray, starts: list[int],
                dtype: torch.dtype) -> list[tuple]:
    """Each stage's rows as a CSR block whose columns index the previous layer's sorted units."""
    s = layer.csr(torch.device("cpu"))
    crow, col = s.crow.numpy(), s.col.numpy()
    values = layer.packed_values().detach().to("cpu", dtype).numpy()
    bias = None if layer.bias is None else layer.bias.detach().to("cpu", dtype).numpy()
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    blocks = []
    for st in range(len(starts) - 1):
        rows = out_order[starts[st]:starts[st + 1]]
        lens = crow[rows + 1] - crow[rows]
        block_crow = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(lens, out=block_crow[1:])
        # The kept entries of these rows, row after row: each row's run of CSR positions.
        entries = np.repeat(crow[rows] - block_crow[:-1], lens) + np.arange(block_crow[-1])
        blocks.append((block_crow, position[col[entries]].astype(np.int64), np.ascontiguousarray(values[entries]),
                       None if bias is None else np.ascontiguousarray(bias[rows])))
    return blocks


def level_plan(step: nn.Module, z: torch.Tensor) -> LevelPlan | None:
    r"""The cached :class:`LevelPlan` of a flow step for `z`'s device and dtype, or None where it does not apply.

    It applies to steps with a StrNN conditioner when no gradient is needed (sampling; ``rsample``
    differentiates through the passes), outside ``torch.compile`` and ``torch.func`` transforms,
    and when the blocks fit :data:`MAX_BLOCK_ENTRIES`.
    """
    from .conditioners import StrNNConditioner

    cond = step.conditioner
    if not isinstance(cond, StrNNConditioner) or torch.is_grad_enabled():
        return None
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return None
    if not (z.device.type == "cpu" and z.dtype in (torch.float32, torch.float64)) and LevelPlan.entries(cond) > MAX_BLOCK_ENTRIES:
        return None  # dense blocks off the CPU: bounded
    # Any in-place update of a parameter (an optimizer step) bumps its version: a new plan.
    key = (z.device, z.dtype, tuple((p._version, p.data_ptr()) for p in cond.parameters()))
    cached = _PLANS.get(cond)
    if cached is not None and cached[0] == key:
        return cached[1]
    plan = LevelPlan(cond, z.device, z.dtype)
    _PLANS[cond] = (key, plan)
    return plan


def traceable_plan(step: nn.Module) -> LevelPlan | None:
    r"""A :class:`LevelPlan` of torch ops only (dense blocks) for `step`, or None where none applies.

    :mod:`strnn_fast.export` sets it as the step's ``traced_plan``: an exported ``sample`` then
    computes each unit once, instead of ``depth + 1`` passes of the whole conditioner. The blocks
    are cut from the weights as they are now.

    Example:
        >>> from strnn_fast.flows import StrAF
        >>> flow = StrAF([("a", "b"), ("b", "c")], hidden_sizes=(8,), flow_steps=1)
        >>> traceable_plan(flow.steps[0]).n_stages
        3
    """
    from .conditioners import StrNNConditioner

    cond = step.conditioner
    if not isinstance(cond, StrNNConditioner) or LevelPlan.entries(cond) > MAX_BLOCK_ENTRIES:
        return None
    p = next(cond.parameters())
    return LevelPlan(cond, p.device, p.dtype, traceable=True)


# conditioner -> (key, plan); weak, so that a plan lives no longer than its conditioner.
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
