"""A weight matrix held otherwise than as a plain tensor of the compute dtype.

The notebook multiplies every weight as `x @ W.T`. A `Matrix` runs that product its own way
(`times_transposed`: a fused quantized kernel, or a one-row product that reads the file's
bf16), and for any other use (`W.view(…)`, `W[3]`, `torch.cat([W])` …) it is the plain
tensor that `values()` gives, in the compute dtype. plumbing/quantization.py and
plumbing/one_row.py hold the two kinds.
"""

from __future__ import annotations

import torch


class Matrix:
    """`[out_features × in_features]`; subclasses give `shape`, `values()` and
    `times_transposed(x)`."""

    shape: torch.Size

    def values(self) -> torch.Tensor:
        raise NotImplementedError

    def times_transposed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def T(self) -> Transposed:
        return Transposed(self)

    def __getattr__(self, name):  # .view, .float, .abs …: on the plain values
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.values(), name)

    def __getitem__(self, index):
        return self.values()[index]

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        matmul = (torch.Tensor.__matmul__, torch.Tensor.matmul, torch.matmul)
        if func in matmul and len(args) == 2 and isinstance(args[1], Transposed):
            if isinstance(args[0], torch.Tensor):
                return args[1].matrix.times_transposed(args[0])
        return func(*plain(args), **plain(kwargs))


class Transposed:
    """`W.T` of a Matrix: the right operand of `x @ W.T`."""

    __torch_function__ = Matrix.__torch_function__

    def __init__(self, matrix: Matrix):
        self.matrix = matrix
        self.shape = torch.Size(tuple(matrix.shape)[::-1])

    @property
    def T(self) -> Matrix:
        return self.matrix

    def __rmatmul__(self, x):
        return self.matrix.times_transposed(x)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.matrix.values().T, name)


def plain(value):
    """Arguments with every Matrix replaced by its plain values."""
    if isinstance(value, Matrix):
        return value.values()
    if isinstance(value, Transposed):
        return value.matrix.values().T
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value
