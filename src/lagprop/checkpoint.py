"""Checkpoints of a run: written atomically, verified on reading, refused when they do not fit.

A checkpoint is everything :meth:`lagprop.train.Trainer.state_dict` holds (weights,
optimizer state, the examples' x and lambda, the random generators, the epoch and the
metrics so far) plus what is needed to rebuild the run: the graph, the full command-line
configuration and a fingerprint of the training data.

File format: one line ``LAGPROP-CHECKPOINT 1 <sha256 of the body>`` then the body, a
``torch.save`` archive.  The digest makes any corruption (a truncated copy, a flipped
bit) a clear error instead of a confusing unpickling failure or, worse, silently wrong
numbers.

Why two files.  :func:`write_checkpoint` writes the new checkpoint to a temporary file,
fsyncs it, then renames the current ``checkpoint.pt`` to ``checkpoint.prev.pt`` and the
temporary file to ``checkpoint.pt`` (renames are atomic).  A process killed at any moment
leaves either a complete ``checkpoint.pt`` or, between the two renames, a complete
``checkpoint.prev.pt``; :func:`read_checkpoint` falls back to the latter.

Only one process should write (rank 0 in a distributed run): every write goes through
:func:`write_checkpoint`.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, DivergenceError, LagpropError

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
MAGIC = b"LAGPROP-CHECKPOINT 1 "
FORMAT = 1


class CheckpointError(LagpropError):
    """A checkpoint is missing, corrupt, or does not match the graph or data."""


# ------------------------------------------------------------------ bytes
def encode(payload: dict[str, Any]) -> bytes:
    """The file's bytes: the header line with the body's SHA-256, then the body."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    return MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def decode(data: bytes, where: str = "checkpoint") -> dict[str, Any]:
    """Verify the digest and unpickle (tensors and plain containers only: weights_only)."""
    head, sep, body = data.partition(b"\n")
    if not head.startswith(MAGIC) or not sep:
        raise CheckpointError(f"{where} is not a lagprop checkpoint (bad header)")
    if hashlib.sha256(body).hexdigest().encode() != head[len(MAGIC):]:
        raise CheckpointError(f"{where} is corrupt (its checksum does not match; truncated or damaged file)")
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as e:  # a digest match makes this very unlikely
        raise CheckpointError(f"{where} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{where} has an unknown layout; it was written by another version of lagprop")
    return payload


# ------------------------------------------------------------------ files
def write_checkpoint(folder: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as ``folder/checkpoint.pt``, keeping the previous one as ``.prev``.

    The single place that writes checkpoints (guard it by rank in a distributed run).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = encode(payload)
    for stale in folder.glob(f".{CHECKPOINT}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{CHECKPOINT}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        cur = folder / CHECKPOINT
        if cur.exists():
            os.replace(cur, folder / PREVIOUS)
        os.replace(tmp, cur)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return folder / CHECKPOINT


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read a checkpoint file, or a run folder's newest loadable one (falling back to .prev).

    Returns the payload and the file it came from; raises :class:`CheckpointError` saying
    what is wrong with each candidate when none can be loaded.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / CHECKPOINT, path / PREVIOUS]
    elif path.exists():
        candidates = [path]
    else:
        raise CheckpointError(f"{str(path)!r} does not exist; give a run folder written by 'lagprop train'")
    problems = []
    for c in candidates:
        if not c.exists():
            continue
        try:
            return decode(c.read_bytes(), str(c)), c
        except CheckpointError as e:
            problems.append(str(e))
        except OSError as e:
            problems.append(f"{c}: {e.strerror}")
    if not problems:
        raise CheckpointError(f"{str(path)!r} holds no checkpoint ({CHECKPOINT}); was it written by "
                              "'lagprop train' (with --checkpoint-every >= 1)?")
    raise CheckpointError("no loadable checkpoint: " + "; ".join(problems))


# ------------------------------------------------------------------ contents
def data_fingerprint(X: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> str:
    """SHA-256 of the training arrays: resuming on different data is refused."""
    h = hashlib.sha256()
    for a in (X, y):
        arr = np.ascontiguousarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a)
        h.update(str((arr.shape, arr.dtype.str)).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def make_payload(trainer, args: dict[str, Any] | None = None,
                 data_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a checkpoint holds: the trainer's state plus the graph, configuration and data id."""
    return {
        "format": FORMAT,
        "trainer": trainer.state_dict(),
        "graph": trainer.net.graph.to_dict(),
        "args": dict(args or {}),
        "data": dict(data_info or {}),
        "fingerprint": _fingerprint_of(trainer),
    }


def _fingerprint_of(trainer) -> str:
    """The training data's fingerprint, hashed once per trainer (the data do not change)."""
    fp = getattr(trainer, "_data_fingerprint", None)
    if fp is None:
        fp = data_fingerprint(trainer.data.X_train, trainer.data.y_train)
        trainer._data_fingerprint = fp
    return fp


def check_compatible(payload: dict[str, Any], trainer) -> None:
    """Refuse a checkpoint written for another graph or another training set."""
    mine = trainer.net.graph.to_dict()
    theirs = payload.get("graph") or {}
    if theirs != mine:
        diff = [k for k in mine if mine.get(k) != theirs.get(k)]
        raise CheckpointError(
            f"the checkpoint was written for another graph ({len(theirs.get('roles', []))} neurons, "
            f"{len(theirs.get('arcs', []))} arcs; this one has {len(mine['roles'])} neurons, "
            f"{len(mine['arcs'])} arcs; differs in {', '.join(diff)}); resume with the same graph")
    fp = _fingerprint_of(trainer)
    if payload.get("fingerprint") not in (None, fp):
        raise CheckpointError("the training data differ from those the checkpoint was written with "
                              "(file changed, or another --dataset / --split-seed / --test-fraction); "
                              "resume on the same data")


def restore(trainer, payload: dict[str, Any]) -> None:
    """Check ``payload`` against ``trainer`` and load it; any mismatch is a CheckpointError."""
    check_compatible(payload, trainer)
    try:
        trainer.load_state_dict(payload["trainer"])
    except LagpropError as e:
        raise CheckpointError(str(e)) from None
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"the checkpoint does not fit this trainer ({first}); resume with the "
                              "same graph, method and options") from None


def load_into(trainer, path: str | Path) -> Path:
    """Read the newest loadable checkpoint at ``path`` and restore ``trainer`` from it."""
    payload, used = read_checkpoint(path)
    restore(trainer, payload)
    return used


# ------------------------------------------------------------------ a training session
def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` already holds the files of a run (so a new run would replace them)."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / n).exists() for n in RUN_FILES)


RUN_FILES = ("config.json", "summary.json", "metrics.csv", "model.pt", CHECKPOINT, PREVIOUS)


def clear_run(folder: str | Path) -> None:
    """Remove the files of an earlier run (--overwrite); other files in the folder stay."""
    folder = Path(folder)
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)


class _Stop(Exception):
    """Raised from the epoch callback after a Ctrl-C: the checkpoint is written, stop."""


class Session:
    """Runs ``trainer.fit`` with checkpoints every ``every`` epochs, Ctrl-C and divergence handling.

    ``out`` is the run folder (:class:`lagprop.runs.RunDir`, or a do-nothing stand-in on
    ranks that do not write); checkpoints go through ``out.save_checkpoint``.  The payload
    is built on every rank (a distributed trainer's ``state_dict`` gathers across ranks).

    * A checkpoint is written before the first epoch, so a run that diverges at once still
      leaves one, and it is written only *after* the epoch's divergence check has passed.
    * The first Ctrl-C lets the current epoch finish, writes a checkpoint and stops (exit
      code 130); a second Ctrl-C stops at once, keeping the last checkpoint.
    """

    def __init__(self, trainer, out, every: int = 1, args: dict[str, Any] | None = None,
                 log=None) -> None:
        if every < 0:
            raise ConfigError(f"--checkpoint-every must be >= 0 (0: never), got {every}")
        self.trainer, self.out, self.every, self.args = trainer, out, every, args or {}
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.saved_epoch: int | None = None
        self._asked = False

    def save(self) -> None:
        if self.every == 0:
            return
        self.out.save_checkpoint(make_payload(self.trainer, self.args))
        self.saved_epoch = self.trainer.epoch

    def resume_hint(self) -> str:
        return f"lagprop train --resume {self.out.path} --epochs {self.trainer.cfg.epochs}"

    def _on_sigint(self, signum, frame) -> None:
        if self._asked:
            raise KeyboardInterrupt
        self._asked = True
        self.log("lagprop: stopping after this epoch to write a checkpoint (Ctrl-C again to stop at once)")

    def fit(self, callback=None) -> bool:
        """Train; True if the run finished, False if Ctrl-C stopped it (checkpoint written)."""
        import signal
        t = self.trainer
        if t.epoch == 0:
            self.save()
        target = t.cfg.epochs

        def on_epoch(tr, m) -> None:
            if callback is not None:
                callback(tr, m)
            self.out.write_tensorboard(m)
            if self.every and (tr.epoch % self.every == 0 or tr.epoch >= target):
                self.save()
            if self._asked:
                if self.saved_epoch != tr.epoch:
                    self.save()
                raise _Stop

        try:
            old = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            old = None
        try:
            t.fit(callback=on_epoch)
            if self.saved_epoch != t.epoch:
                self.save()
            return True
        except _Stop:
            self.log(f"lagprop: interrupted; checkpoint of epoch {t.epoch} written to "
                     f"{Path(self.out.path) / CHECKPOINT}; continue with: {self.resume_hint()}")
            return False
        except KeyboardInterrupt:
            where = (f"the checkpoint of epoch {self.saved_epoch} in {Path(self.out.path) / CHECKPOINT} is kept; "
                     f"continue with: {self.resume_hint()}") if self.saved_epoch is not None else "no checkpoint"
            self.log(f"lagprop: interrupted during epoch {t.epoch + 1}; {where}")
            return False
        except DivergenceError as e:
            if self.saved_epoch is None:
                raise
            raise DivergenceError(f"{e}. The last good checkpoint (epoch {self.saved_epoch}) stays in "
                                  f"{Path(self.out.path) / CHECKPOINT}") from None
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
