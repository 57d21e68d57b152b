r"""Causal flows: interventions, counterfactuals and treatment effects with a structured flow.

:class:`CausalFlow` reads an autoregressive flow on a causal DAG as a learned structural equation
model (the latent of each variable is its exogenous noise); :mod:`strnn_fast.causal.queries`
holds the model-agnostic do-inverse. Ground-truth SEMs live in :mod:`strnn_fast.data.sem`.

Example:
    >>> import torch
    >>> model = CausalFlow([("t", "y")], hidden_sizes=(8,), flow_steps=1)
    >>> model.structure, model.names
    ('graph', ['t', 'y'])
"""
from .flow import CausalFlow
from .queries import affected, do_inverse, do_rounds

__all__ = ["CausalFlow", "affected", "do_inverse", "do_rounds"]
