r"""A FastStrNN as grouped dense products: the exportable form of its sparse layers.

``torch.export`` takes neither sparse CSR tensors nor the C++ kernels, and the masked dense
product does every multiply of ``W``, kept or not: at 2-3 % density that is ~35x the work. Here
the output units of a layer that share one mask row (one set of inputs: Algorithm 1 gives
hidden units few distinct connection patterns, and a variable's parameters all share one) form
a group, computed as one small dense product of the group's inputs. Groups of similar sizes are
padded to one shape and run as one batched product (a bucket), so a layer is a few ``bmm``\ s
whatever its number of groups.

Activations run feature-major, ``(units, batch)``: a group's inputs are then whole rows
(contiguous gathers), and each bucket's product ``(G, R, C) @ (G, C, batch)`` writes its rows of
the next activation directly. A hidden layer keeps its units in bucket order, padding rows
included (zero weights, zero bias: they hold ``act(0)``, which no later weight reads); only the
output layer gathers its rows back into the network's order. A layer whose buckets would do at
least :data:`DENSE_ABOVE` of the dense work stays a dense product.

A network with ``k`` outputs per variable (output ``p * d + i`` is parameter p of variable i, all
k reading the same inputs: a flow's conditioner) can also give its parameters as a (B, d, k)
view (:meth:`GroupedChain.block_view`) whose memory is parameter-major and feature-major,
``(k, d, B)``, so that the elementwise code after it (the spline) runs flat loops along the
batch, contiguous. Its last layer is then one ``bmm`` over the variables, each padded to the
largest input count, with no gather; where that padding would cost :data:`BLOCKS_BELOW` of the
dense work or more and no layer is grouped, the dense feature-major products give the same layout.

Example:
    >>> import numpy as np, torch
    >>> from strnn_fast import FastStrNN
    >>> net = FastStrNN(6, (16, 16), 6, adjacency=np.tril(np.ones((6, 6)), -1), backend="dense")
    >>> chain = GroupedChain(net.layers)
    >>> x = torch.randn(5, 6)
    >>> with torch.no_grad():
    ...     bool(torch.allclose(chain(x), net(x), atol=1e-6))
    True
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import ACTIVATIONS
from .nn import FastStrNN, per_variable

__all__ = ["GroupedChain", "grouped_networks", "row_groups"]

#: Largest padded/kept ratio of one bucket: more groups join a bucket while its padded product
#: stays within this multiple of its kept weights.
WASTE = 2.0
#: A layer stays dense when its buckets would do at least this fraction of the dense work. On the
#: d=15 benchmark model (buckets at 15-23 % of the dense work) the grouped log_prob package against
#: the dense one (CPU time, interleaved, loaded box): 0.124 vs 0.111 ms at batch 1, 0.305 vs 0.308
#: at 64, 0.90 vs 0.99 at 256, 25.5 vs 22.4 at 4096 (the switch's cost); at d=100 (2-4 %) it was
#: 2.3-7x faster at batch 1-64 (UP_TO).
DENSE_ABOVE = 0.1
#: The per-variable last layer (blocks) is built when its padded product is below this fraction of
#: the dense work. Held-out spline StrAFs (bench/heldout_export.py, log_prob package against eager
#: at batch 4096, CPU time, 1 thread, separate runs): d=30 hidden 256 (blocks at 11.7 %): 1.01-1.18x
#: with blocks, 1.93x through the network's forward (dense products above UP_TO); d=24 hidden 64
#: (14.1 %): 0.64-0.77x with blocks, 0.77x without; the d=15 benchmark model (37.5 %) is faster
#: without (0.64 vs 0.68x, one run, wall).
BLOCKS_BELOW = 0.2
#: The largest batch run grouped; larger ones run the dense products. On the d=100 benchmark
#: model's log_prob package (CPU time, interleaved, loaded box): grouped 0.28 vs dense 1.94 ms at
#: batch 1, 7.7 vs 14.7 ms at 256, 38 vs 32 ms at 512, 119 vs 72 ms at 1024.
UP_TO = 256


def row_groups(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    r"""The output units of ``mask`` (out, in) grouped by identical rows: (rows, columns) pairs.

    A row without inputs joins the group with no columns. Groups come sorted by their numbers of
    columns, then of rows.

    Example:
        >>> [(r.tolist(), c.tolist()) for r, c in row_groups(np.array([[1, 0], [0, 0], [1, 0], [1, 1]]))]
        [([1], []), ([0, 2], [0]), ([3], [0, 1])]
    """
    patterns: dict[bytes, list[int]] = {}
    for r, row in enumerate(np.asarray(mask, dtype=bool)):
        patterns.setdefault(row.tobytes(), []).append(r)
    groups = [(np.array(rows), np.flatnonzero(mask[rows[0]])) for rows in patterns.values()]
    return sorted(groups, key=lambda g: (len(g[1]), len(g[0])))


def _padded_shape(bucket: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, int]:
    # (rows, columns) every group of a bucket is padded to; a group with no columns gets one
    # (a zero weight: its rows hold the bias).
    return max(len(r) for r, _ in bucket), max(max(len(c), 1) for _, c in bucket)


def _buckets(groups: list[tuple[np.ndarray, np.ndarray]], waste: float) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    # Consecutive groups (sorted by size) share a bucket while padding to the largest stays
    # within `waste` times their kept weights (a group with no columns counts one per row).
    out: list[list] = []
    for g in groups:
        trial = (out[-1] if out else []) + [g]
        rows, cols = _padded_shape(trial)
        kept = sum(len(r) * max(len(c), 1) for r, c in trial)
        if out and len(trial) * rows * cols <= waste * kept:
            out[-1] = trial
        else:
            out.append([g])
    return out


class _Layer(nn.Module):
    # One layer, feature-major: x (width, batch) -> act(y) (rows, batch). `pos` maps this layer's
    # input units to rows of x (the previous layer's bucket order); `gather` (or None) maps its
    # output units back to their own order, for the last layer.
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, mask: np.ndarray, activation: str,
                 pos: np.ndarray, width: int, last: bool):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        out, n_in = mask.shape
        bias = torch.zeros(out, dtype=weight.dtype, device=weight.device) if bias is None else bias
        groups = row_groups(mask)
        buckets = _buckets(groups, WASTE)
        padded = sum(len(b) * math.prod(_padded_shape(b)) for b in buckets)
        self.grouped = padded < DENSE_ABOVE * out * n_in
        if not self.grouped:  # columns follow x's rows; rows stay in the unit order
            w = weight.new_zeros(out, width)
            w[:, torch.as_tensor(pos, device=weight.device)] = weight
            self.register_buffer("w", w)
            self.register_buffer("b", bias.unsqueeze(-1).clone())
            self.order, self.rows, self.gather = np.arange(out), out, None
            return
        self.n = len(buckets)
        order = np.full(out, -1)
        offset = 0
        for i, bucket in enumerate(buckets):
            R, C = _padded_shape(bucket)
            idx = np.zeros((len(bucket), C), dtype=np.int64)
            w = weight.new_zeros(len(bucket), R, C)
            b = weight.new_zeros(len(bucket), R, 1)
            for g, (rows, cols) in enumerate(bucket):
                idx[g, : len(cols)] = pos[cols]
                rows_t = torch.as_tensor(rows, device=weight.device)
                w[g, : len(rows), : len(cols)] = weight[rows_t][:, torch.as_tensor(cols, device=weight.device)]
                b[g, : len(rows), 0] = bias[rows_t]
                order[rows] = offset + g * R + np.arange(len(rows))
            offset += len(bucket) * R
            self.register_buffer(f"idx{i}", torch.as_tensor(idx.reshape(-1), device=weight.device))
            self.register_buffer(f"w{i}", w)
            self.register_buffer(f"b{i}", b)
        self.order, self.rows = order, offset  # unit -> row of this layer's output; its row count
        self.gather = torch.as_tensor(order, device=weight.device) if last else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.grouped:
            return self.act(torch.addmm(self.b, self.w, x))
        parts = []
        for i in range(self.n):
            idx, w, b = getattr(self, f"idx{i}"), getattr(self, f"w{i}"), getattr(self, f"b{i}")
            xg = x.index_select(0, idx).view(w.shape[0], w.shape[2], -1)
            parts.append(torch.baddbmm(b, w, xg).flatten(0, 1))
        y = self.act(torch.cat(parts) if len(parts) > 1 else parts[0])
        return y if self.gather is None else y.index_select(0, self.gather)


class _Blocks(nn.Module):
    # The last layer as k outputs per variable, feature-major in: x (width, B) -> (B, d, k). One
    # bmm over the d variables, each padded to the largest input count C: no gather afterwards.
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, mask: np.ndarray, activation: str,
                 pos: np.ndarray, k: int):
        super().__init__()
        out = mask.shape[0]
        if k < 1 or out % k:
            raise ValueError(f"blocks must divide the network's {out} outputs, got {k!r}")
        d = out // k
        rows = np.arange(k)[:, None] * d + np.arange(d)  # rows[p, i]: parameter p of variable i
        if not (mask[rows] == mask[rows[0]][None]).all():
            raise ValueError(f"the network's outputs are not {k} per variable (their mask rows differ)")
        self.act = ACTIVATIONS[activation]
        cols = [np.flatnonzero(mask[i]) for i in range(d)]
        C = max(max(len(c) for c in cols), 1)  # a variable with no inputs: one zero weight
        bias = torch.zeros(out, dtype=weight.dtype, device=weight.device) if bias is None else bias
        idx = np.zeros((d, C), dtype=np.int64)
        w = weight.new_zeros(d, k, C)
        for i, c in enumerate(cols):
            idx[i, : len(c)] = pos[c]
            w[i, :, : len(c)] = weight[torch.as_tensor(rows[:, i], device=weight.device)][
                :, torch.as_tensor(c, device=weight.device)]
        self.register_buffer("idx", torch.as_tensor(idx.reshape(-1), device=weight.device))
        b = bias.view(k, d).t().unsqueeze(-1)  # (d, k, 1)
        # Few outputs per variable (affine: 2): the C products summed elementwise, written
        # parameter-major directly, weights (k, d, C); else a bmm, weights (d, k, C).
        self.summed = 2 * k <= C
        self.register_buffer("w", (w.transpose(0, 1) if self.summed else w).contiguous())
        self.register_buffer("b", (b.transpose(0, 1) if self.summed else b).contiguous())
        self.d, self.k, self.C, self.padded = d, k, C, d * k * C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, C = self.d, self.C
        xg = x.index_select(0, self.idx).view(d, C, -1)
        if self.summed:
            # The bmm's gathered inputs (d*C rows) would outweigh its output; Inductor reads them
            # in place here. d=100 affine StrAF log_prob package, batch 4096 (CPU time,
            # interleaved): 21-24 ms, through the bmm 44.6 (eager 13-16).
            y = self.b
            for c in range(C):  # weights (k, d, 1) times inputs (1, d, B)
                y = y + self.w[:, :, c:c + 1] * xg[None, :, c]
            return self.act(y).permute(2, 1, 0)
        y = self.act(torch.baddbmm(self.b, self.w, xg))  # (d, k, B)
        # Copied to parameter-major memory (k, d, B) by a stack, which Inductor computes into a
        # buffer of its own: each parameter is then one contiguous (d, B) block, read by the
        # spline's flat loops over d*B (vectorized at batch 1 too). y's permuted view compiled to
        # loops over d, then B (masked vector tails at batch 1: 0.33 vs 0.25 ms, d=100 log_prob
        # package); a scatter into new_empty memory miscompiled (bench/results/export_notes.md).
        return torch.stack(y.unbind(1)).permute(2, 1, 0)


class GroupedChain(nn.Module):
    r"""The masked layers of a FastStrNN as grouped dense products (see the module docstring).

    Built from the layers as they are (a snapshot: later weight edits are not seen); computes
    ``x (..., in) -> (..., out)`` like the network, in the layers' dtype and device. Batches of at
    most ``up_to`` rows run the grouped products, larger ones the masked dense products (a
    ``torch.cond``, so an exported program holds both and picks by its input's batch size).

    Arguments:
        layers: the network's MaskedLinear layers, input side first.
        up_to: the largest batch that runs grouped.
        blocks: the network's outputs per variable (see the module docstring), for
            :meth:`block_view`; None: none.
    """

    def __init__(self, layers: Sequence[nn.Module], up_to: int = UP_TO, blocks: int | None = None):
        super().__init__()
        pos, width = np.arange(layers[0].in_features), layers[0].in_features
        built = []
        for k, layer in enumerate(layers):
            with torch.no_grad():
                weight = layer.dense_weight().detach()
                bias = None if layer.bias is None else layer.bias.detach()
            mask = layer.keep_mask(weight.device).cpu().numpy().astype(bool)
            built.append(_Layer(weight, bias, mask, layer.activation, pos, width, last=k == len(layers) - 1))
            pos, width = built[-1].order, built[-1].rows
            self.register_buffer(f"dense_w{k}", weight.clone())
            self.register_buffer(f"dense_b{k}", None if bias is None else bias.clone())
        self.layers = nn.ModuleList(built)
        self.acts = [ACTIVATIONS[layer.activation] for layer in layers]
        self.out_features = layers[-1].out_features
        self.up_to = up_to
        self.k, self.blocks = blocks, None
        if blocks is not None:  # the last layer's weight, bias and mask are still at hand
            into = built[-2].order if len(built) > 1 else np.arange(layers[0].in_features)
            block = _Blocks(weight, bias, mask, layers[-1].activation, into, blocks)
            if block.padded < BLOCKS_BELOW * weight.numel():
                self.blocks = block

    @property
    def saves_work(self) -> bool:
        """Whether any layer runs grouped (else the chain is the dense network, at more cost)."""
        return any(layer.grouped for layer in self.layers) or self.blocks is not None

    def block_view(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The outputs for x (B, in) as (B, out/k, k): ``[:, i, p]`` is output ``p * out/k + i``.

        For the chain's own ``blocks=k``, a view of (k, d, B) memory (through the per-variable
        last layer where it was built, else through dense layers), else a view of
        :meth:`forward`'s output (which picks grouped or dense products by the batch size)."""
        if k != self.k or (self.blocks is None and self.saves_work):
            return per_variable(self(x), k)
        h = x.t()
        for layer in self.layers if self.blocks is None else self.layers[:-1]:
            h = layer(h)
        if self.blocks is None:
            # Dense layers: the last one's rows in unit order, (out, B), are (k, d, B). d=15
            # spline StrAF log_prob package (dense 12-17 % masks, blocks at 37 % of the dense
            # work), batch 4096 (wall, interleaved, 1 thread): 14.6 ms, batch-major 18.7, eager 23.0.
            return h.view(k, -1, h.shape[-1]).permute(2, 1, 0)
        return self.blocks(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = x.reshape(-1, x.shape[-1])
        h = torch.cond(h.shape[0] <= self.up_to, self._grouped, self._dense, (h,))
        return h.reshape(*lead, self.out_features)

    def _grouped(self, x: torch.Tensor) -> torch.Tensor:
        h = x.t()
        for layer in self.layers:
            h = layer(h)
        return h.t().contiguous()

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        # Its own F.linear chain, not the layers' forward: torch.cond traces both branches with
        # dynamo, which does not pass the layers' backend dispatch (tried on a whole method).
        for k, act in enumerate(self.acts):
            x = act(F.linear(x, getattr(self, f"dense_w{k}"), getattr(self, f"dense_b{k}")))
        return x


@contextlib.contextmanager
def grouped_networks(model: nn.Module, blocks: Mapping[nn.Module, int] | None = None) -> Iterator[None]:
    r"""Runs every CPU :class:`~strnn_fast.FastStrNN` inside ``model`` as a :class:`GroupedChain`.

    :func:`strnn_fast.export.export` traces under this: the chain is the network's function in
    ops ``torch.export`` takes. It is built from the weights as they are on entry; on exit the
    networks are as before. Networks where no layer would save work keep their ``forward``.
    ``blocks`` maps networks to their outputs per variable: their ``block_view`` then runs the
    chain's (feature-major where the chain has blocks or no grouped layer).

    Example:
        >>> from strnn_fast.flows import StrAF
        >>> from strnn_fast.data.adjacency import random_dag
        >>> flow = StrAF(random_dag(20, parents=(1, 2), seed=0), hidden_sizes=(32,), flow_steps=1)
        >>> with grouped_networks(flow):
        ...     type(flow.steps[0].conditioner.net._grouped).__name__
        'GroupedChain'
        >>> hasattr(flow.steps[0].conditioner.net, "_grouped")
        False
    """
    blocks = blocks or {}
    chains = {net: GroupedChain(net.layers, blocks=blocks.get(net)) for net in model.modules()
              if isinstance(net, FastStrNN) and net.layers[0].param_device.type == "cpu"}
    # A network with blocks gives them feature-major even where no layer saves work (dense layers).
    chains = {net: chain for net, chain in chains.items() if chain.saves_work or chain.k is not None}
    for net, chain in chains.items():
        net._grouped = chain
        if chain.saves_work:  # instance attributes: nn.Module.__call__ runs forward
            net.forward = chain.forward
        net.block_view = chain.block_view
    try:
        yield
    finally:
        for net in chains:
            vars(net).pop("forward", None)
            del net.block_view, net._grouped
