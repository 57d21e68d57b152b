r"""Maximum-likelihood training for any model with ``log_prob``: AdamW, early stopping, DDP.

The loss is ``-model.log_prob(x).mean()``, plus ``model.extra_loss()`` when the model defines one
(regularizers of continuous flows). Early stopping watches the validation NLL and restores the
best weights from a copy taken at that epoch; the reference restored its final weights because it
kept a live ``state_dict``, whose tensors alias the parameters.

Launched under ``torchrun`` (``WORLD_SIZE > 1``), :func:`fit` joins or creates the process group
(gloo on CPU, nccl on CUDA), wraps the model in DistributedDataParallel, shards every epoch's
batches with a DistributedSampler and averages the train and validation NLL over all ranks, so
every rank takes the same early-stopping decision and ends with the same weights.

Example:
    >>> import torch
    >>> from torch.distributions import Normal
    >>> class Gauss(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.mu = torch.nn.Parameter(torch.zeros(2))
    ...     def log_prob(self, x):
    ...         return Normal(self.mu, 1.0).log_prob(x).sum(-1)
    >>> model = Gauss()
    >>> x = torch.randn(200, 2) + 3.0
    >>> history = fit(model, x[:150], x[150:], epochs=5, lr=0.5, verbose=False)
    >>> history.val_nll[-1] < history.val_nll[0]
    True
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ._validate import as_flag, as_positive_int, as_real, as_seed, check_fits_dtype
from .threads import DEFAULT_THREADS, cpu_threads
from .variables import Variables, is_frame

__all__ = ["History", "evaluate_nll", "fit", "is_main_process", "world"]

SCHEDULERS = ("plateau", None)


@dataclass
class History:
    r"""What happened during :func:`fit`.

    Arguments:
        train_nll: mean training NLL of each epoch (averaged over its batches while training).
        val_nll: validation NLL after each epoch (empty without validation data).
        lr: learning rate used in each epoch.
        best_epoch: index of the epoch whose weights the model holds at the end.
        stopped_early: whether patience ran out before ``epochs``.
        seconds: wall time of the whole fit.
        interrupted: whether Ctrl-C (KeyboardInterrupt) stopped training after at least one epoch;
            the model then holds its best weights so far (a Ctrl-C before the first epoch ended
            propagates, with the model's weights as they were).

    Example:
        >>> History(train_nll=[2.0, 1.5], val_nll=[2.1, 1.7], best_epoch=1).best_val_nll
        1.7
    """

    train_nll: list[float] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def epochs(self) -> int:
        """Number of epochs run."""
        return len(self.train_nll)

    @property
    def best_val_nll(self) -> float:
        """Validation NLL of the kept weights (NaN without validation data or a finite value)."""
        return self.val_nll[self.best_epoch] if self.val_nll and self.best_epoch >= 0 else math.nan

    def summary(self) -> str:
        r"""One line: epochs run, how it ended, the kept epoch and its NLL, the time.

        Example:
            >>> History(train_nll=[2.0, 1.5], val_nll=[2.1, 1.7], best_epoch=1, seconds=0.5).summary()
            '2 epochs in 0.5 s; kept epoch 2 (validation NLL 1.7000)'
        """
        how = "; stopped early" if self.stopped_early else "; interrupted (Ctrl-C)" if self.interrupted else ""
        kept = ""
        if self.best_epoch >= 0:
            nll = (f"validation NLL {self.best_val_nll:.4f}" if self.val_nll
                   else f"training NLL {self.train_nll[self.best_epoch]:.4f}")
            kept = f"; kept epoch {self.best_epoch + 1} ({nll})"
        return f"{self.epochs} epochs in {self.seconds:.1f} s{how}{kept}"


def _log_prob(model: nn.Module, x: torch.Tensor, context_columns: int) -> torch.Tensor:
    # Conditional models get their context as the last columns of the batch (see fit's context=).
    if not context_columns:
        return model.log_prob(x)
    return model.log_prob(x[:, :-context_columns], context=x[:, -context_columns:])


class _NLL(nn.Module):
    """Puts the loss in ``forward`` so DistributedDataParallel's gradient hooks see it."""

    def __init__(self, model: nn.Module, context_columns: int = 0):
        super().__init__()
        self.model = model
        self.context_columns = context_columns

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nll = -_log_prob(self.model, x, self.context_columns).mean()
        extra = getattr(self.model, "extra_loss", None)
        loss = nll + extra() if callable(extra) else nll
        return loss, nll.detach()


def world() -> tuple[int, int]:
    r"""Returns ``(rank, world_size)`` of this process: from torch.distributed, else torchrun's env.

    Example:
        >>> world()  # a plain process
        (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process is rank 0 (the one that prints and writes files)."""
    return world()[0] == 0


def _as_data(value: Any, name: str, dtype: torch.dtype, names: Any = None) -> torch.Tensor:
    if is_frame(value):  # matched by name to a named model; an unnamed one reads it by position
        value = Variables(names).frame_rows(value, name) if names is not None else value.to_numpy()
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
        t = value.detach().cpu()
    else:
        arr = np.asarray(value)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a numeric (n, d) array or tensor, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n samples x d variables), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    check_fits_dtype(t, dtype, name, names)
    t = t.to(dtype)
    if not torch.isfinite(t).all():
        row = int((~torch.isfinite(t)).any(dim=1).nonzero()[0])
        raise ValueError(f"{name} contains NaN or infinite values (first in row {row}); drop or impute those rows")
    return t


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in model.parameters():
        return p.dtype, p.device
    raise TypeError(f"{type(model).__name__} has no parameters to train")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def _nll_sum(model: nn.Module, data: torch.Tensor, batch_size: int, device: torch.device,
             context_columns: int = 0) -> float:
    total = 0.0
    with _eval_mode(model):
        for start in range(0, len(data), batch_size):
            batch = data[start:start + batch_size].to(device, non_blocking=True)
            total -= float(_log_prob(model, batch, context_columns).double().sum())
    return total


def _with_context(x: torch.Tensor, context: Any, name: str, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    # [x, c] as one tensor (so batching and DDP sharding keep rows together), and C.
    if context is None:
        return x, 0
    c = _as_data(context, name, dtype)
    if len(c) != len(x):
        raise ValueError(f"{name} has {len(c)} rows but its data has {len(x)}; give one context row per data row")
    return torch.cat([x, c], dim=1), c.shape[1]


def evaluate_nll(model: nn.Module, data: Any, batch_size: int = 1024, context: Any = None) -> float:
    r"""Mean negative log-likelihood of the rows of ``data`` (nats per sample), in eval mode.

    Arguments:
        model: any module with ``log_prob``.
        data: (n, d) array or tensor.
        batch_size: rows per forward pass.
        context: (n, C) context rows of a conditional model (``log_prob(x, context=c)``).

    Returns:
        The mean NLL as a Python float.

    Example:
        >>> import torch
        >>> from strnn_fast.flows import StrAF
        >>> flow, x = StrAF([[0, 0], [1, 0]], hidden_sizes=(4,), flow_steps=1), torch.randn(8, 2)
        >>> abs(evaluate_nll(flow, x, batch_size=3) + flow.log_prob(x).mean().item()) < 1e-5
        True
    """
    if not callable(getattr(model, "log_prob", None)):
        raise TypeError(f"model must define log_prob(x), got {type(model).__name__}")
    batch_size = as_positive_int(batch_size, "batch_size")
    dtype, device = _model_dtype_device(model)
    x = _as_data(data, "data", dtype, getattr(model, "names", None))
    x, columns = _with_context(x, context, "context", dtype)
    return _nll_sum(model, x, batch_size, device, columns) / len(x)


def _adamw(params: list[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    # The fused kernel updates every parameter in one pass: flows have dozens of small tensors,
    # and the per-tensor loop made whole fits of a spline StrAF 1.5x slower on the CPU (measured
    # at d=15, 5 steps). Parameters it cannot take (mixed devices or dtypes) get the plain loop.
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _check_args(model: nn.Module, epochs: Any, batch_size: Any, lr: Any, weight_decay: Any, patience: Any,
                seed: Any, scheduler: Any, max_grad_norm: Any) -> None:
    if not callable(getattr(model, "log_prob", None)):
        raise TypeError(f"model must define log_prob(x), got {type(model).__name__}")
    as_positive_int(epochs, "epochs")
    as_positive_int(batch_size, "batch_size")
    if patience is not None:
        as_positive_int(patience, "patience")
    as_seed(seed)
    as_real(lr, "lr", positive=True)
    as_real(weight_decay, "weight_decay", non_negative=True)
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; expected 'plateau' or None")
    if max_grad_norm is not None:
        as_real(max_grad_norm, "max_grad_norm", positive=True, finite=False)  # inf: measure, never clip


def _setup_distributed(device: torch.device | str | None) -> tuple[bool, torch.device | None]:
    """Joins torchrun's process group when there is one; returns (created_here, device)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False, (torch.device(device) if device is not None else None)
    use_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if use_cuda and device is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return True, (torch.device(device) if device is not None else None)


def _all_sum(values: list[float], device: torch.device, distributed: bool) -> list[float]:
    if not distributed:
        return values
    # nccl reduces only CUDA tensors; gloo only CPU ones.
    on = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(t)
    return t.tolist()


def _epoch_order(n: int, seed: int, epoch: int, distributed: bool) -> torch.Tensor:
    """Row order of one epoch: a seeded permutation, this rank's share of it under DDP."""
    if distributed:
        sampler = torch.utils.data.DistributedSampler(range(n), shuffle=True, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long)
    # Same generator and seed as DistributedSampler: one process with batch k*b sees the same
    # batches as k ranks with batch b each.
    g = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=g)


def fit(
    model: nn.Module,
    train: Any,
    val: Any = None,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    patience: int | None = 10,
    seed: int = 0,
    verbose: bool = True,
    scheduler: str | None = "plateau",
    max_grad_norm: float | None = None,
    device: torch.device | str | None = None,
    context: Any = None,
    val_context: Any = None,
    threads: int | None = DEFAULT_THREADS,
    progress: bool | None = None,
) -> History:
    r"""Trains ``model`` in place by maximum likelihood and returns the history.

    With validation data, training stops after ``patience`` epochs without a new best validation
    NLL, and the model ends with the weights of its best epoch. Without it, every epoch runs and
    the final weights are kept. The plateau schedule halves the learning rate after
    ``max(1, patience // 2)`` epochs (5 when patience is None) without improvement of the watched
    NLL (validation, else training), so it acts before early stopping does.

    Arguments:
        model: module with ``log_prob(x)`` returning one log-density per row; an optional
            ``extra_loss()`` is added to the loss.
        train: (n, d) training data, array or tensor; cast to the model's dtype.
        val: optional (m, d) validation data.
        epochs: maximum number of passes over ``train``.
        batch_size: rows per step (per process under DDP).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        patience: epochs without improvement before stopping; None never stops early.
        seed: seeds the batch order and, for the duration of the call, torch's global RNG (for
            models that draw noise); the caller's RNG state is restored afterwards.
        verbose: show a progress bar (``tqdm.auto``: in terminals and notebooks, not in logs) and
            end with one summary line on stderr (epochs, best validation NLL, time); rank 0 only.
            False prints nothing (the CLI's ``--quiet``).
        scheduler: "plateau" or None.
        max_grad_norm: clip the gradient norm to this value when given.
        device: where to train; defaults to the model's device (``cuda:LOCAL_RANK`` under
            torchrun when CUDA is available). The model is moved there.
        context: (n, C) context rows for a conditional model: the loss is then
            ``-model.log_prob(x, context=c)``; ``val_context`` is required with ``val``.
        val_context: (m, C) context rows of ``val``.
        threads: torch threads while training (default 1, as the CLI's ``--threads``; see
            :mod:`strnn_fast.threads`); None keeps torch's setting. Restored afterwards.
        progress: deprecated name of ``verbose``.

    Training columns far from zero mean and unit variance give a UserWarning that points to
    :class:`strnn_fast.standardize.Standardized` (the data are used as given). Ctrl-C after the
    first epoch stops training and returns with ``History.interrupted`` set and the best weights.

    Returns:
        A :class:`History`.

    Raises:
        TypeError / ValueError: bad arguments or data (NaN, wrong shape, d mismatch).
        FloatingPointError: the training NLL (or a weight) became NaN or infinite; the model is
            restored first to its best weights (with ``val``), else to the last weights that ended
            an epoch finitely, else to its initial weights: never to NaN.

    Example:
        >>> import torch
        >>> class Gauss(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.mu = torch.nn.Parameter(torch.zeros(1))
        ...     def log_prob(self, x):
        ...         return torch.distributions.Normal(self.mu, 1.0).log_prob(x).sum(-1)
        >>> h = fit(Gauss(), torch.full((64, 1), 2.0), epochs=3, lr=0.1, verbose=False)
        >>> h.epochs, h.best_epoch
        (3, 2)
    """
    if progress is not None:
        warnings.warn("fit(progress=) is renamed verbose=", FutureWarning, stacklevel=2)
        verbose = progress
    as_flag(verbose, "verbose")
    _check_args(model, epochs, batch_size, lr, weight_decay, patience, seed, scheduler, max_grad_norm)
    dtype, model_device = _model_dtype_device(model)
    if lr > torch.finfo(dtype).max:
        raise ValueError(f"lr={lr} does not fit the model's {dtype}; learning rates are small positive numbers")
    names = getattr(model, "names", None)  # DataFrame columns are matched to these by name
    x_train = _as_data(train, "train", dtype, names)
    x_val = _as_data(val, "val", dtype, names) if val is not None else None
    if x_val is not None and x_val.shape[1] != x_train.shape[1]:
        raise ValueError(f"val has {x_val.shape[1]} columns but train has {x_train.shape[1]}; "
                         "both must hold the same variables")
    d = getattr(model, "d", None)  # flows and density estimators know their number of variables
    if isinstance(d, int) and d != x_train.shape[1]:
        raise ValueError(f"train has {x_train.shape[1]} columns but the model has d={d} variables")
    if val_context is not None and (context is None or x_val is None):
        raise ValueError("val_context needs context (the training rows' context) and val")
    if context is not None and x_val is not None and val_context is None:
        raise ValueError("val_context is required: the model is fit with a context, so val needs one too")
    _warn_if_unstandardized(model, x_train)
    x_train, columns = _with_context(x_train, context, "context", dtype)
    if x_val is not None:
        x_val, val_columns = _with_context(x_val, val_context, "val_context", dtype)
        if val_columns != columns:
            raise ValueError(f"val_context has {val_columns} columns but context has {columns}")

    created_group, device = _setup_distributed(device)
    device = device if device is not None else model_device
    # Checked before the model moves, so that a refused device leaves the model where it was.
    if device.type == "meta":
        raise ValueError("device='meta' holds no data and cannot train; give 'cpu' or 'cuda'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available here; give device='cpu'")
    model.to(device)
    rank, size = world()
    distributed = size > 1
    fork_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices), cpu_threads(threads):
            torch.manual_seed(seed)
            history = _train(model, x_train, x_val, device, rank, size, distributed, epochs=int(epochs),
                             batch_size=int(batch_size), lr=float(lr), weight_decay=float(weight_decay),
                             patience=patience, seed=int(seed), progress=verbose and rank == 0,
                             scheduler=scheduler, max_grad_norm=max_grad_norm, context_columns=columns)
        if verbose and rank == 0:
            print(f"fit: {history.summary()}", file=sys.stderr, flush=True)
        return history
    finally:
        if created_group:
            dist.destroy_process_group()


def _train(model: nn.Module, x_train: torch.Tensor, x_val: torch.Tensor | None, device: torch.device,
           rank: int, size: int, distributed: bool, *, epochs: int, batch_size: int, lr: float,
           weight_decay: float, patience: int | None, seed: int, progress: bool, scheduler: str | None,
           max_grad_norm: float | None, context_columns: int = 0) -> History:
    start = time.perf_counter()
    was_training = model.training
    loss_module: nn.Module = _NLL(model, context_columns)
    if distributed:
        ids = [device.index] if device.type == "cuda" else None
        # DDP broadcasts rank 0's weights here, so ranks start identical whatever their init.
        loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=ids)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _adamw(params, lr, weight_decay)
    plateau = None
    if scheduler == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5,
                                                             patience=max(1, (patience or 10) // 2))
    val_shard = x_val[rank::size] if x_val is not None else None

    history = History()
    # Copies (state_dict() tensors alias the parameters and would follow later updates): the best
    # weights under validation, else the last weights that ended an epoch with a finite NLL; the
    # initial weights until then, so that a failure never leaves NaN behind.
    best_state: dict[str, torch.Tensor] | None = None
    safe_state = _snapshot(model)
    finished = False
    # disable=None: tqdm.auto shows the bar on a terminal and in a notebook, not in a log file; the
    # summary line that fit prints afterwards is the lasting record.
    bar = tqdm(range(epochs), desc="fit", unit="epoch", disable=None if progress else True,
               dynamic_ncols=True, leave=False)
    try:
        for epoch in bar:
            model.train()
            order = _epoch_order(len(x_train), seed, epoch, distributed)
            nll_sum = 0.0
            for s in range(0, len(order), batch_size):
                batch = x_train[order[s:s + batch_size]].to(device, non_blocking=True)
                loss, nll = loss_module(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()
                nll_sum += float(nll) * len(batch)
            # Checked on the reduced sum so that every rank raises together.
            train_sum, train_n = _all_sum([nll_sum, float(len(order))], device, distributed)
            if math.isfinite(train_sum) and not all(bool(torch.isfinite(p).all()) for p in params):
                train_sum = math.nan  # the last step broke the weights although its loss was finite
            if not math.isfinite(train_sum):
                raise FloatingPointError(f"the training NLL became {train_sum} in epoch {epoch}; standardize the "
                                         "data, lower lr or set max_grad_norm (the model is restored to its "
                                         f"{'best' if best_state is not None else 'last finite'} weights)")
            history.train_nll.append(train_sum / train_n)
            history.lr.append(optimizer.param_groups[0]["lr"])
            score = history.train_nll[-1]
            if val_shard is not None:
                val_sum, val_n = _all_sum([_nll_sum(model, val_shard, 4 * batch_size, device, context_columns),
                                           float(len(val_shard))], device, distributed)
                score = val_sum / val_n
                history.val_nll.append(score)
                bar.set_postfix(train=f"{history.train_nll[-1]:.4f}", val=f"{score:.4f}")
            else:
                bar.set_postfix(train=f"{score:.4f}")
            if plateau is not None:
                plateau.step(score)
            if x_val is None:
                history.best_epoch = epoch
                safe_state = _snapshot(model) if epoch + 1 < epochs else None  # the last epoch's are kept
            elif score < history.best_val_nll or (history.best_epoch < 0 and math.isfinite(score)):
                history.best_epoch = epoch
                best_state = _snapshot(model)
            elif patience is not None and epoch - max(history.best_epoch, 0) >= patience:
                history.stopped_early = True
                break
        finished = True
    except KeyboardInterrupt:
        if history.epochs == 0 or (x_val is not None and best_state is None):
            raise  # nothing learnt yet: the finally below restores the weights it started with
        history.interrupted = True  # keep the best weights so far (restored below) and report it
    finally:
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        elif not finished and safe_state is not None:
            model.load_state_dict(safe_state)
        model.train(was_training)
        history.seconds = time.perf_counter() - start
    return history


def _warn_if_unstandardized(model: nn.Module, x: Any) -> None:
    """Warns (once per call) when training columns are far from zero mean and unit variance.

    The policy for Python fits: warn and point to Standardized, leaving the data as given (the
    CLI and CausalFlow standardize themselves, so they never see this). Binary density data are
    modelled as 0/1 and are exempt."""
    if getattr(model, "data_type", None) == "binary" or not isinstance(x, torch.Tensor) or len(x) < 2:
        return
    x64 = x.detach().double()
    mean, std = x64.mean(0), x64.std(0, correction=0)
    far = ((mean.abs() > 3 * std.clamp(min=1)) | (std > 10) | (std < 0.1)).nonzero().flatten().tolist()
    if far:
        c = far[0]
        warnings.warn(f"training columns {far[:10]} are far from standardized (column {c}: mean {float(mean[c]):.4g}, "
                      f"std {float(std[c]):.4g}); a flow with a standard-normal base trains poorly in raw units. Fit "
                      "on strnn_fast.standardize.Standardizer.fit(x).transform(x) and wrap the model in "
                      "strnn_fast.standardize.Standardized (as strnn-fast fit and CausalFlow do)",
                      UserWarning, stacklevel=3)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
