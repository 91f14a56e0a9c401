"""Generated and structured tasks beyond flat tables: sequences (and graphs, appended below).

Shared module: each task family only appends functions; nothing here is rewritten.

Sequence tasks return a :class:`SeqDataset`: inputs ``(N, T, n_in)``, targets at the steps
``steps`` (``(N, |S|, n_out)`` floats for regression, ``(N, |S|)`` class indices for
classification), generated from a seed so that a run can be repeated exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

SEQUENCE_TASKS = ("adding", "parity", "mnist1d-seq")


@dataclass
class SeqDataset:
    """A sequence task: train and test parts, the target steps and the number of classes."""

    name: str
    U_train: np.ndarray
    Y_train: np.ndarray
    U_test: np.ndarray
    Y_test: np.ndarray
    steps: tuple[int, ...]       # time indices (0-based) that carry a target
    n_classes: int | None        # None: regression (mse)

    @property
    def n_inputs(self) -> int:
        return self.U_train.shape[2]

    @property
    def seq_len(self) -> int:
        return self.U_train.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.n_classes is not None else self.Y_train.shape[2]

    def describe(self) -> str:
        task = f"{self.n_classes} classes" if self.n_classes else "regression"
        return (f"{self.name}: {len(self.U_train)} train / {len(self.U_test)} test sequences of "
                f"length {self.seq_len}, {self.n_inputs} inputs, {task}, targets at {len(self.steps)} step(s)")


def is_sequence_task(name: str | None) -> bool:
    """True for the names :func:`load_sequence_task` knows."""
    return name is not None and name.lower() in SEQUENCE_TASKS


def _check_len(seq_len: int, least: int) -> None:
    if seq_len < least:
        raise ConfigError(f"--seq-len must be >= {least} for this task, got {seq_len}")


def adding_problem(n: int, seq_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hochreiter and Schmidhuber's adding problem: inputs (value in [0, 1], marker).

    Exactly two steps are marked, one in each half of the sequence; the target, given at the
    last step, is the sum of the two marked values.  Predicting the mean 1 scores MSE 1/6.
    """
    _check_len(seq_len, 2)
    vals = rng.uniform(0, 1, (n, seq_len))
    marks = np.zeros((n, seq_len))
    half = seq_len // 2
    i = rng.integers(0, half, n)
    j = rng.integers(half, seq_len, n)
    marks[np.arange(n), i] = 1
    marks[np.arange(n), j] = 1
    U = np.stack([vals, marks], 2).astype(np.float32)
    Y = (vals * marks).sum(1).reshape(n, 1, 1).astype(np.float32)
    return U, Y


def parity_task(n: int, seq_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Running parity of random bits: the target at every step is the parity so far.

    Inputs are +-1; the class at step t is (number of ones among bits 1..t) mod 2, so the
    network must carry one bit of memory for the whole sequence.
    """
    _check_len(seq_len, 1)
    bits = rng.integers(0, 2, (n, seq_len))
    U = (2.0 * bits - 1).reshape(n, seq_len, 1).astype(np.float32)
    Y = (np.cumsum(bits, 1) % 2).astype(np.int64)
    return U, Y


def load_sequence_task(name: str, seq_len: int = 20, n_train: int = 10_000, n_test: int = 1_000,
                       seed: int = 0) -> SeqDataset:
    """Build a sequence task by name (``adding``, ``parity``, ``mnist1d-seq``)."""
    key = name.lower()
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"need at least one train and one test sequence, got {n_train} and {n_test}")
    rng = np.random.default_rng(seed)
    if key == "adding":
        U, Y = adding_problem(n_train + n_test, seq_len, rng)
        return SeqDataset(f"adding{seq_len}", U[:n_train], Y[:n_train], U[n_train:], Y[n_train:],
                          (seq_len - 1,), None)
    if key == "parity":
        U, Y = parity_task(n_train + n_test, seq_len, rng)
        return SeqDataset(f"parity{seq_len}", U[:n_train], Y[:n_train], U[n_train:], Y[n_train:],
                          tuple(range(seq_len)), 2)
    if key == "mnist1d-seq":
        from .data import load_dataset
        ds = load_dataset("mnist1d")  # standardised per feature; read left to right, one value per step
        T = ds.n_inputs
        return SeqDataset("mnist1d-seq", ds.X_train.reshape(-1, T, 1), ds.y_train.reshape(-1, 1),
                          ds.X_test.reshape(-1, T, 1), ds.y_test.reshape(-1, 1), (T - 1,), 10)
    raise ConfigError(f"unknown sequence task {name!r}; choose one of {', '.join(SEQUENCE_TASKS)}")
