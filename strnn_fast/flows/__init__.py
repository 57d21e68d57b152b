r"""Normalizing flows with a torch-Distribution-like face.

* :class:`StrAF`: structured autoregressive flow (affine, rational-quadratic spline or UMNN normalizer).
* :class:`ARF`, :class:`GNF`: the MADE and input-masking baselines on the same API.
* :class:`StrCNF`, :class:`FFJORD`: continuous flows (``cnf.py``; ODEs solved by torchdiffeq, a
  core dependency; dynamics in ``odefunc.py``).
* :class:`Flow`: the shared base (``log_prob``, ``sample``, ``rsample``, ``transform``, ``inverse``, all
  with an optional ``context``); ``flow(context)`` is a :class:`FlowDistribution`, a real
  ``torch.distributions.Distribution``.

Example:
    >>> import torch
    >>> flow = StrAF([("a", "b"), ("b", "c")], hidden_sizes=(8,), flow_steps=2)
    >>> x = flow.sample(4)
    >>> z, log_det = flow.transform(x)
    >>> bool(torch.allclose(flow.inverse(z), x, atol=1e-4))
    True
"""
from .arf import ARF
from .autoregressive import AutoregressiveFlow, FlowStep
from .base import Flow, FlowDistribution
from .cnf import FFJORD, StrCNF
from .conditioners import Conditioner, GNFConditioner, StrNNConditioner
from .gnf import GNF
from .normalizers import AffineNormalizer, Normalizer, SplineNormalizer, UMNNNormalizer, clenshaw_curtis
from .priors import PRIORS, make_prior
from .straf import StrAF

__all__ = [
    "ARF",
    "AffineNormalizer",
    "AutoregressiveFlow",
    "Conditioner",
    "FFJORD",
    "Flow",
    "FlowDistribution",
    "FlowStep",
    "GNF",
    "GNFConditioner",
    "Normalizer",
    "PRIORS",
    "SplineNormalizer",
    "StrAF",
    "StrCNF",
    "StrNNConditioner",
    "UMNNNormalizer",
    "clenshaw_curtis",
    "make_prior",
]

