r"""Adjacency generators, synthetic data sets, causal ground truth and file loaders.

Example:
    >>> from strnn_fast.data import make_multimodal
    >>> make_multimodal(n=100, seed=0).sizes
    (60, 20, 20)
"""
from .adjacency import banded, block_graph, full_triangle, random_dag
from .binary import load_reference_binary, make_binary_bn
from .dataset import Dataset
from .loaders import check_adjacency_matches, load_adjacency, load_table
from .multimodal import make_multimodal
from .random_sem import random_sparse_sem
from .sem import SEM, LinearGaussianSEM, LinearSEM

__all__ = [
    "SEM",
    "Dataset",
    "LinearGaussianSEM",
    "LinearSEM",
    "banded",
    "block_graph",
    "check_adjacency_matches",
    "full_triangle",
    "load_adjacency",
    "load_reference_binary",
    "load_table",
    "make_binary_bn",
    "make_multimodal",
    "random_dag",
    "random_sparse_sem",
]
