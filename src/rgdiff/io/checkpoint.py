"""Checkpoints of long runs (`rgdiff train`, `rgdiff sample`) and exact resumption.

A checkpoint folder holds one file, `checkpoint.rgdiff`::

    RGDIFF-CHECKPOINT 2\\n
    {header JSON}\\n          command, step, config, identity, versions, created, sha256 of the payload,
                              the shape and dtype of every array, and small host state (metrics so
                              far, running sums)
    payload                   the arrays, `eqx.tree_serialise_leaves` of their list: model parameters
                              and optimizer state, or the chain states, adapted step sizes and mass
                              matrices and the samples so far

Format 1 (an .npz payload) is refused with a clear line: start such a run afresh.

It is replaced atomically (temporary file + rename), so a kill at any instant leaves either the
previous or the new checkpoint. Reading checks the magic line, the header, the SHA-256 of the
payload and that the checkpoint belongs to the same command and configuration (its identity);
a corrupt or foreign checkpoint is refused with one clear line and never overwritten.

Exact resume: every random number of a run is drawn from a key fold_in(key, step), so the run
continued from step k draws what the uninterrupted run draws; on the CPU the resumed run ends
with bitwise the same parameters and samples.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import os
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.io.atomic import atomic_path, package_versions
from rgdiff.errors import RgdiffError

FORMAT_VERSION = 2
MAGIC = b"RGDIFF-CHECKPOINT %d\n" % FORMAT_VERSION
_MAGIC_PREFIX = b"RGDIFF-CHECKPOINT "
FILE = "checkpoint.rgdiff"


class ReadCheckpointError(RgdiffError):
    """A checkpoint is missing, corrupt, or belongs to another run."""


class NumericalFaultError(RgdiffError):
    """A loss, score or field became NaN or infinite; the last good checkpoint is kept."""


def _canonical(x) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"), default=str)


def write_checkpoint(folder: Path, *, command: str, step: int, arrays: list, config: dict, identity: dict,
                     host: dict | None = None) -> Path:
    """Write (atomically replace) the checkpoint in `folder`."""
    arrays = [np.asarray(a) for a in arrays]
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, arrays)
    payload = buf.getvalue()
    header = {
        "format": "rgdiff-checkpoint",
        "command": command,
        "step": int(step),
        "arrays": [{"shape": list(a.shape), "dtype": a.dtype.str} for a in arrays],
        "config": config,
        "identity": identity,
        "identity_sha256": hashlib.sha256(_canonical(identity).encode()).hexdigest(),
        "host": host or {},
        "versions": package_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    path = folder / FILE
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            f.write(_canonical(header).encode() + b"\n")
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    return path


def read_checkpoint(folder: Path) -> tuple[dict, list[np.ndarray]]:
    """The header and the arrays of the checkpoint in `folder`, verified against its checksum."""
    folder = Path(folder)
    path = folder / FILE
    if not folder.exists():
        raise ReadCheckpointError(f"checkpoint folder {folder} does not exist")
    if not path.is_file():
        raise ReadCheckpointError(f"{folder} holds no checkpoint ({FILE} is missing)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReadCheckpointError(f"cannot read {path} ({exc.strerror})") from None
    if not raw.startswith(MAGIC):
        if raw.startswith(_MAGIC_PREFIX):
            version = raw[len(_MAGIC_PREFIX):raw.find(b"\n")].decode(errors="replace")
            raise ReadCheckpointError(
                f"{path} has checkpoint format {version}, but this rgdiff reads format {FORMAT_VERSION}; "
                "it was left untouched: start the run afresh without --resume"
            )
        raise ReadCheckpointError(f"{path} is not an rgdiff checkpoint (bad magic line); it was left untouched")
    end = raw.find(b"\n", len(MAGIC))
    try:
        header = json.loads(raw[len(MAGIC):end])
        if not isinstance(header, dict) or header.get("format") != "rgdiff-checkpoint":
            raise ValueError("not a checkpoint header")
        expected = header["payload_sha256"]
    except (ValueError, KeyError, UnicodeDecodeError):
        raise ReadCheckpointError(f"{path} has a damaged header; it was left untouched") from None
    payload = raw[end + 1:] if end >= 0 else b""
    if hashlib.sha256(payload).hexdigest() != expected:
        raise ReadCheckpointError(
            f"{path} is corrupt (its SHA-256 does not match the one recorded); it was left untouched"
        )
    try:
        skeleton = [np.empty(tuple(spec["shape"]), np.dtype(spec["dtype"])) for spec in header["arrays"]]
        stream = io.BytesIO(payload)
        arrays = eqx.tree_deserialise_leaves(stream, skeleton)
        if stream.read(1) or any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(arrays, skeleton)):
            raise ValueError("the arrays do not match the header")
    except Exception as exc:  # numpy raises several types for a damaged stream
        raise ReadCheckpointError(f"{path} has an unreadable payload ({exc.__class__.__name__})") from None
    return header, arrays


class Checkpointer:
    """Periodic checkpoints of one run in one folder.

    - `folder`: where the checkpoint lives (default: the output path + ".ckpt").
    - `every`: steps (training) or chunks (sampling) between checkpoints.
    - `resume`: continue from the checkpoint in `folder` (it must exist and match `identity`).
    """

    def __init__(self, folder: Path, *, command: str, every: int, config: dict, identity: dict, resume: bool):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise RgdiffError(f"--checkpoint-every must be an integer >= 1, got {every!r}")
        self.folder = Path(folder)
        self.command = command
        self.every = every
        self.config = config
        self.identity = identity
        self.resumed: tuple[dict, list[np.ndarray]] | None = None
        if resume:
            header, arrays = read_checkpoint(self.folder)
            self._check_identity(header)
            self.resumed = (header, arrays)
        elif (self.folder / FILE).exists():
            raise ReadCheckpointError(
                f"{self.folder} already holds a checkpoint; continue it with --resume {self.folder} "
                "or delete the folder to start afresh"
            )

    @classmethod
    def for_command(cls, command: str, *, out: Path, resume: Path | None, every: int, folder: Path | None,
                    config: dict, identity: dict | None = None) -> "Checkpointer":
        folder = Path(resume or folder or Path(f"{out}.ckpt"))
        identity = identity if identity is not None else _identity(config)
        if resume is None and folder.exists() and not folder.is_dir():
            raise RgdiffError(f"checkpoint folder {folder} is a file")
        return cls(folder, command=command, every=every, config=config, identity=identity, resume=resume is not None)

    def _check_identity(self, header: dict) -> None:
        if header.get("command") != self.command:
            raise ReadCheckpointError(
                f"{self.folder} is a checkpoint of `rgdiff {header.get('command')}`, not of `rgdiff {self.command}`; "
                "it was left untouched"
            )
        mine = hashlib.sha256(_canonical(self.identity).encode()).hexdigest()
        if header.get("identity_sha256") != mine:
            theirs = header.get("identity", {})
            diff = sorted(_diff(theirs, self.identity))
            raise ReadCheckpointError(
                f"{self.folder} belongs to another run (differs in {', '.join(diff[:5]) or 'its inputs'}); "
                "resume with the same settings and inputs, or start afresh without --resume"
            )

    @property
    def start_step(self) -> int:
        return int(self.resumed[0]["step"]) if self.resumed else 0

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def save(self, step: int, arrays: list, host: dict | None = None) -> None:
        for i, a in enumerate(arrays):
            a = np.asarray(a)
            if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
                raise NumericalFaultError(
                    f"non-finite values in the state at step {step} (array {i}); the checkpoint in "
                    f"{self.folder} was kept at its last good step"
                )
        self.folder.mkdir(parents=True, exist_ok=True)
        write_checkpoint(self.folder, command=self.command, step=step, arrays=arrays, config=self.config,
                         identity=self.identity, host=host)

    def last_good(self) -> str:
        if (self.folder / FILE).exists():
            try:
                header, _ = read_checkpoint(self.folder)
                return f"the last good checkpoint (step {header['step']}) is kept in {self.folder}"
            except ReadCheckpointError:
                pass
        return "no checkpoint was written yet"

    # training ------------------------------------------------------------------------------
    host_extra: dict | None = None  # more host state to save with each checkpoint (e.g. metrics so far)
    total: int | None = None  # the run's last step (no checkpoint there: the output follows)

    def restore_training(self, model, opt_state):
        """(start step, model, optimizer state, (running loss sum, count)) from the checkpoint,
        or the given fresh state if not resuming. The fresh state is the skeleton the saved
        arrays are poured into, so a checkpoint of another model shape is refused."""
        if self.resumed is None:
            return 0, model, opt_state, (0.0, 0)
        header, arrays = self.resumed
        dynamic, static = eqx.partition((model, opt_state), eqx.is_array)
        leaves, treedef = jax.tree.flatten(dynamic)
        if len(leaves) != len(arrays) or any(
            tuple(a.shape) != tuple(b.shape) or np.dtype(a.dtype) != np.dtype(b.dtype) for a, b in zip(arrays, leaves)
        ):
            raise ReadCheckpointError(f"{self.folder} holds a state of another model or optimizer; it was left untouched")
        model, opt_state = eqx.combine(jax.tree.unflatten(treedef, [jnp.asarray(a) for a in arrays]), static)
        host = header.get("host", {})
        return int(header["step"]), model, opt_state, (float(host.get("running", 0.0)), int(host.get("count", 0)))

    def after_training_step(self, step: int, model, opt_state, running) -> None:
        if not self.due(step) or step == self.total:
            return  # the last step is followed by the output itself
        leaves = [np.asarray(x) for x in jax.tree.leaves(eqx.filter((model, opt_state), eqx.is_array))]
        for a in leaves:
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise NumericalFaultError(
                    f"the model parameters or optimizer state became non-finite at step {step}; {self.last_good()}"
                )
        host = {"running": float(running[0]), "count": int(running[1]), "every": self.every, **(self.host_extra or {})}
        self.save(step, leaves, host)

    # sampling ------------------------------------------------------------------------------
    _chunks = 0

    def resumed_sampling(self, states_skeleton, params_skeleton) -> dict | None:
        """The saved sampler state poured into the given skeletons (chain states, adapted params)."""
        if self.resumed is None:
            return None
        header, arrays = self.resumed
        leaves, treedef = jax.tree.flatten((states_skeleton, params_skeleton))
        n = len(leaves)
        if len(arrays) != n + 4 or any(
            tuple(a.shape) != tuple(b.shape) or np.dtype(a.dtype) != np.dtype(b.dtype) for a, b in zip(arrays, leaves)
        ):
            raise ReadCheckpointError(f"{self.folder} holds the state of another sampler; it was left untouched")
        states, params = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in arrays[:n]])
        fields, acc_sum, div_sum, nint_sum = arrays[n:]
        done = int(header["step"])
        self._chunks = int(header.get("host", {}).get("chunks", 0))
        return {"states": states, "params": params, "fields": fields, "acc_sum": acc_sum.copy(),
                "div_sum": div_sum.copy(), "nint_sum": nint_sum.copy(), "done": done}

    def after_sampling_chunk(self, done: int, states, params, fields, acc_sum, div_sum, nint_sum, *, final: bool) -> None:
        """Save after every `every`-th chunk: chain states, adapted params, the `done` samples so far
        per chain and the running diagnostic sums."""
        self._chunks += 1
        if not self.due(self._chunks) or final:
            return  # the final chunk is followed by the output itself
        leaves = [np.asarray(x) for x in jax.tree.leaves((states, params))]
        self.save(done, leaves + [np.asarray(fields)[:, :done], acc_sum, div_sum, nint_sum],
                  {"chunks": self._chunks, "every": self.every})

    def remove(self) -> None:
        """Delete the checkpoint once the final output is safely written (and its folder, if that
        is then empty: a --checkpoint-dir holding other files keeps them)."""
        with contextlib.suppress(FileNotFoundError):
            (self.folder / FILE).unlink()
        with contextlib.suppress(OSError):
            self.folder.rmdir()


def _identity(config: dict) -> dict:
    """What must agree between a checkpoint and the run that resumes it: everything but where the
    output goes and how often checkpoints are written."""
    skip = {"out", "checkpoint_every"}

    def walk(d):
        return {k: walk(v) if isinstance(v, dict) else v for k, v in d.items() if k not in skip}

    return walk(config)


def _diff(a, b, prefix="") -> set[str]:
    out = set()
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return {prefix or "value"} if a != b else set()
    for k in set(a) | set(b):
        name = f"{prefix}.{k}" if prefix else k
        if k not in a or k not in b:
            out.add(name)
        else:
            out |= _diff(a[k], b[k], name)
    return out
