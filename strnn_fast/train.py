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
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from ._validate import as_flag, as_positive_int, as_real, as_rows, as_seed, warn_if_unstandardized
from .threads import DEFAULT_THREADS, cpu_threads

__all__ = ["History", "evaluate_nll", "fit"]
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


def _log_prob(model: nn.Module, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    # The context keyword only for conditional fits: any model with log_prob(x) trains.
    return model.log_prob(x) if context is None else model.log_prob(x, context=context)


class _NLL(nn.Module):
    """Puts the loss in ``forward`` so DistributedDataParallel's gradient hooks see it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        nll = -_log_prob(self.model, x, context).mean()
        extra = getattr(self.model, "extra_loss", None)
        loss = nll + extra() if callable(extra) else nll
        return loss, nll.detach()


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


def _rows(data: torch.Tensor, context: torch.Tensor | None, index: Any, device: torch.device) -> tuple:
    # The batch ``index`` of the data and of its context (None without one), on ``device``.
    c = None if context is None else context[index].to(device, non_blocking=True)
    return data[index].to(device, non_blocking=True), c


def _nll_sum(model: nn.Module, data: torch.Tensor, context: torch.Tensor | None, batch_size: int,
             device: torch.device) -> float:
    total = 0.0
    with _eval_mode(model):
        for start in range(0, len(data), batch_size):
            x, c = _rows(data, context, slice(start, start + batch_size), device)
            total -= float(_log_prob(model, x, c).double().sum())
    return total


def _context_rows(context: Any, name: str, dtype: torch.dtype, n: int) -> torch.Tensor | None:
    # The context of n data rows, checked here once: one numeric row per data row (the model's
    # log_prob then checks its width against context_features).
    if context is None:
        return None
    c = as_rows(context, name, dtype)
    if len(c) != n:
        raise ValueError(f"{name} has {len(c)} rows but its data has {n}; give one context row per data row")
    return c


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
    x = as_rows(data, "data", dtype, getattr(model, "names", None))
    return _nll_sum(model, x, _context_rows(context, "context", dtype, len(x)), batch_size, device) / len(x)


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
    x_train = as_rows(train, "train", dtype, names)
    x_val = as_rows(val, "val", dtype, names) if val is not None else None
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
    warn_if_unstandardized(model, x_train)
    c_train = _context_rows(context, "context", dtype, len(x_train))
    c_val = _context_rows(val_context, "val_context", dtype, len(x_val)) if x_val is not None else None
    if c_val is not None and c_val.shape[1] != c_train.shape[1]:
        raise ValueError(f"val_context has {c_val.shape[1]} columns but context has {c_train.shape[1]}")

    created_group, device = distributed.setup(device)
    device = device if device is not None else model_device
    # Checked before the model moves, so that a refused device leaves the model where it was.
    if device.type == "meta":
        raise ValueError("device='meta' holds no data and cannot train; give 'cpu' or 'cuda'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available here; give device='cpu'")
    model.to(device)
    rank, size = distributed.world()
    parallel = size > 1
    fork_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices), cpu_threads(threads):
            torch.manual_seed(seed)
            history = _train(model, (x_train, c_train), (x_val, c_val), device, rank, size, parallel,
                             epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                             weight_decay=float(weight_decay), patience=patience, seed=int(seed),
                             progress=verbose and rank == 0, scheduler=scheduler, max_grad_norm=max_grad_norm)
        if verbose and rank == 0:
            print(f"fit: {history.summary()}", file=sys.stderr, flush=True)
        return history
    finally:
        if created_group:
            distributed.close()


def _train(model: nn.Module, train: tuple, val: tuple, device: torch.device, rank: int, size: int,
           parallel: bool, *, epochs: int, batch_size: int, lr: float, weight_decay: float, patience: int | None,
           seed: int, progress: bool, scheduler: str | None, max_grad_norm: float | None) -> History:
    # train, val: (rows, context rows or None); val's rows None without validation data.
    (x_train, c_train), (x_val, c_val) = train, val
    start = time.perf_counter()
    was_training = model.training
    loss_module: nn.Module = _NLL(model)
    if parallel:
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
    c_shard = c_val[rank::size] if c_val is not None else None

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
            order = distributed.epoch_order(len(x_train), seed, epoch, parallel)
            nll_sum = 0.0
            for s in range(0, len(order), batch_size):
                batch, c = _rows(x_train, c_train, order[s:s + batch_size], device)
                loss, nll = loss_module(batch, c)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()
                nll_sum += float(nll) * len(batch)
            # Checked on the reduced sum so that every rank raises together.
            train_sum, train_n = distributed.all_sum([nll_sum, float(len(order))], device, parallel)
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
                val_sum, val_n = distributed.all_sum([_nll_sum(model, val_shard, c_shard, 4 * batch_size, device),
                                                      float(len(val_shard))], device, parallel)
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


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
