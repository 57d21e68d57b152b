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
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import ACTIVATIONS

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


class GroupedChain(nn.Module):
    r"""The masked layers of a FastStrNN as grouped dense products (see the module docstring).

    Built from the layers as they are (a snapshot: later weight edits are not seen); computes
    ``x (..., in) -> (..., out)`` like the network, in the layers' dtype and device. Batches of at
    most ``up_to`` rows run the grouped products, larger ones the masked dense products (a
    ``torch.cond``, so an exported program holds both and picks by its input's batch size).

    Arguments:
        layers: the network's MaskedLinear layers, input side first.
        up_to: the largest batch that runs grouped.
    """

    def __init__(self, layers: Sequence[nn.Module], up_to: int = UP_TO):
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

    @property
    def saves_work(self) -> bool:
        """Whether any layer runs grouped (else the chain is the dense network, at more cost)."""
        return any(layer.grouped for layer in self.layers)

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
def grouped_networks(model: nn.Module) -> Iterator[None]:
    r"""Runs every CPU :class:`~strnn_fast.FastStrNN` inside ``model`` as a :class:`GroupedChain`.

    :func:`strnn_fast.export.export` traces under this: the chain is the network's function in
    ops ``torch.export`` takes. It is built from the weights as they are on entry; on exit the
    networks are as before. Networks where no layer would save work stay as they are.

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
    from .nn import FastStrNN

    chains = {net: GroupedChain(net.layers) for net in model.modules()
              if isinstance(net, FastStrNN) and net.layers[0].param_device.type == "cpu"}
    nets = [net for net, chain in chains.items() if chain.saves_work]
    for net in nets:
        net._grouped = chains[net]
        net.forward = net._grouped.forward  # an instance attribute: nn.Module.__call__ runs it
    try:
        yield
    finally:
        for net in nets:
            del net.forward
            del net._grouped
