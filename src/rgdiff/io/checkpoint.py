"""Checkpoints of long runs (`rgdiff train`, `rgdiff sample`) and exact resumption.

A checkpoint folder holds one file, `checkpoint.rgdiff`::

    RGDIFF-CHECKPOINT 3\\n
    {header JSON}\\n          command, step, config, identity, versions, created, sha256 of the payload,
                              the shape and dtype of every array, and small host state (metrics so
                              far, running sums); "header_sha256": the SHA-256 of the header's
                              canonical JSON without this key, so the step, the configuration and
                              the metrics are verified like the payload
    payload                   the arrays, `eqx.tree_serialise_leaves` of their list: model parameters
                              and optimizer state, or the chain states, adapted step sizes and mass
                              matrices and the samples so far

Formats 1 (an .npz payload) and 2 (no header checksum: an edited step resumed into a wrong
result) are refused with a clear line: start such a run afresh.

It is replaced atomically (temporary file + rename), so a kill at any instant leaves either the
previous or the new checkpoint.

Sampling checkpoints keep the samples out of the payload, in an append-only log beside it, so a
checkpoint writes the samples drawn since the previous one plus the (small, fixed-size) sampler
state, not every sample so far: the I/O of a run is linear in its length::

    samples.rgdiff    records, each  b"RGDSMPL1" | uint64 n (little-endian) | n samples per chain,
                      the array (chains, n, *lattice) in C order, dtype as in the header

The header's host state `samples` records the log's committed length in bytes, the number of
samples per chain, the dtype and shape, and a hash chain over the records
(H_0 = "", H_k = SHA-256(H_{k-1} || record k), hex). A checkpoint first appends (and fsyncs) the
new record after the committed length, then replaces the header atomically: a kill at any instant
leaves the previous header, whose committed prefix of the log is untouched (bytes beyond it are
ignored, then cut off by the next append). Resuming verifies the hash chain and refuses a
damaged or truncated log with one clear line, leaving it untouched. Sampling checkpoints of
earlier rgdiff versions (samples inside the payload) still resume. Reading checks the magic line, the header, the SHA-256 of the
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
import struct
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.io.atomic import atomic_path, package_versions
from rgdiff.errors import RgdiffError, RunFaultError

FORMAT_VERSION = 3
MAGIC = b"RGDIFF-CHECKPOINT %d\n" % FORMAT_VERSION
_MAGIC_PREFIX = b"RGDIFF-CHECKPOINT "
FILE = "checkpoint.rgdiff"
SAMPLES_FILE = "samples.rgdiff"  # sampling: the append-only log of the samples so far
_RECORD = struct.Struct("<8sQ")
_RECORD_MAGIC = b"RGDSMPL1"


class ReadCheckpointError(RgdiffError):
    """A checkpoint is missing, corrupt, or belongs to another run."""


class NumericalFaultError(RunFaultError):
    """A loss, score or field became NaN or infinite; the last good checkpoint is kept (CLI exit 1)."""


def _canonical(x) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"), default=str)


def header_checksum(header: dict) -> str:
    """The SHA-256 of a header's canonical JSON, leaving out its own "header_sha256"."""
    return hashlib.sha256(_canonical({k: v for k, v in header.items() if k != "header_sha256"}).encode()).hexdigest()


def seal_header(header: dict) -> dict:
    """Record `header_checksum` in the header (in place); returns it."""
    header["header_sha256"] = header_checksum(header)
    return header


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
    seal_header(header)
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
        sealed = header["header_sha256"]
    except (ValueError, KeyError, UnicodeDecodeError, RecursionError):
        raise ReadCheckpointError(f"{path} has a damaged header; it was left untouched") from None
    if not isinstance(sealed, str) or header_checksum(header) != sealed:
        raise ReadCheckpointError(
            f"{path} is corrupt (its header, with the step and the configuration, does not match the SHA-256 "
            "recorded); it was left untouched"
        )
    if not isinstance(header.get("step"), int) or isinstance(header["step"], bool) or header["step"] < 0:
        raise ReadCheckpointError(f"{path} has a damaged header (step {header.get('step')!r}); it was left untouched")
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

    # identity keys that may change when resuming a run stopped by a numerical fault (a NaN): a
    # smaller learning rate is the usual way out; everything else must match
    RELAXED_AFTER_FAULT = ("training.learning_rate", "learning_rate")

    def __init__(self, folder: Path, *, command: str, every: int, config: dict, identity: dict, resume: bool):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise RgdiffError(f"--checkpoint-every must be an integer >= 1, got {every!r}")
        self.folder = Path(folder)
        # only a folder rgdiff creates is removed at the end (a user's own --checkpoint-dir stays)
        self._own_folder = not self.folder.exists()
        self.command = command
        self.every = every
        self.config = config
        self.identity = identity
        self.resumed: tuple[dict, list[np.ndarray]] | None = None
        self._saved = 0  # sampling: samples per chain in the committed log
        self._log: dict | None = None  # sampling: the committed log's record (header host "samples")
        self._resumed_samples: np.ndarray | None = None
        if resume:
            header, arrays = read_checkpoint(self.folder)
            self._check_identity(header)
            self.resumed = (header, arrays)
            self._own_folder = bool(header.get("host", {}).get("own_folder", False))
            spec = header.get("host", {}).get("samples")
            if spec is not None:
                self._resumed_samples = read_samples_log(self.folder, spec)
                self._saved, self._log = int(spec["samples"]), spec
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
        check_checkpoint_folder(folder)
        return cls(folder, command=command, every=every, config=config, identity=identity, resume=resume is not None)

    def _check_identity(self, header: dict) -> None:
        if header.get("command") != self.command:
            raise ReadCheckpointError(
                f"{self.folder} is a checkpoint of `rgdiff {header.get('command')}`, not of `rgdiff {self.command}`; "
                "it was left untouched"
            )
        mine = hashlib.sha256(_canonical(self.identity).encode()).hexdigest()
        theirs = header.get("identity", {})
        if header.get("identity_sha256") != mine and header.get("host", {}).get("fault"):
            relaxed = sorted(_diff(theirs, self.identity))
            if relaxed and all(name in self.RELAXED_AFTER_FAULT for name in relaxed):
                return  # a run stopped by a NaN, resumed with another learning rate (documented)
        if header.get("identity_sha256") != mine:
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
                         identity=self.identity, host={**(host or {}), "own_folder": self._own_folder})

    def last_good(self) -> str:
        if (self.folder / FILE).exists():
            try:
                header, _ = read_checkpoint(self.folder)
                return f"the last good checkpoint (step {header['step']}) is kept in {self.folder}"
            except ReadCheckpointError:
                pass
        return "no checkpoint was written yet"

    def mark_fault(self, message: str) -> bool:
        """Record in the kept checkpoint that the run stopped on a numerical fault (`message`), so
        that it may be resumed with another learning rate (`RELAXED_AFTER_FAULT`). Returns whether
        there was a checkpoint to mark."""
        try:
            header, arrays = read_checkpoint(self.folder)
        except ReadCheckpointError:
            return False
        host = {**header.get("host", {}), "fault": message}
        write_checkpoint(self.folder, command=header["command"], step=header["step"], arrays=arrays,
                         config=header.get("config", {}), identity=header.get("identity", {}), host=host)
        return True

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

    _pending: tuple | None = None  # training: a checkpoint waiting for its parameters' loss to be finite

    def after_training_step(self, step: int, model, opt_state, running) -> None:
        """Take the state after `step` steps for a checkpoint (every `every` steps). It is written
        by `confirm_training_step(step)` once the next step found the loss and gradient at these
        parameters finite: a kept checkpoint always resumes from parameters with a finite loss
        (else a NaN stop would keep the very parameters that gave the NaN, unusable at any --lr)."""
        if not self.due(step) or step == self.total:
            return  # the last step is followed by the output itself
        leaves = [np.asarray(x) for x in jax.tree.leaves(eqx.filter((model, opt_state), eqx.is_array))]
        for a in leaves:
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise NumericalFaultError(
                    f"the model parameters or optimizer state became non-finite at step {step}; {self.last_good()}"
                )
        extra = {k: list(v) if isinstance(v, list) else v for k, v in (self.host_extra or {}).items()}
        host = {"running": float(running[0]), "count": int(running[1]), "every": self.every, **extra}
        self._pending = (step, leaves, host)

    def confirm_training_step(self, step: int) -> None:
        """The loss and gradient at the parameters after `step` steps are finite: write the
        checkpoint taken then, if any."""
        if self._pending is not None and self._pending[0] == step:
            _, leaves, host = self._pending
            self._pending = None
            self.save(step, leaves, host)

    # sampling ------------------------------------------------------------------------------
    _chunks = 0

    def resumed_sampling(self, states_skeleton, params_skeleton) -> dict | None:
        """The saved sampler state poured into the given skeletons (chain states, adapted params),
        with the samples so far (from the verified log, or the payload of an older checkpoint)."""
        if self.resumed is None:
            return None
        header, arrays = self.resumed
        leaves, treedef = jax.tree.flatten((states_skeleton, params_skeleton))
        n = len(leaves)
        appended = self._resumed_samples is not None
        if len(arrays) != n + (3 if appended else 4) or any(
            tuple(a.shape) != tuple(b.shape) or np.dtype(a.dtype) != np.dtype(b.dtype) for a, b in zip(arrays, leaves)
        ):
            raise ReadCheckpointError(f"{self.folder} holds the state of another sampler; it was left untouched")
        states, params = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in arrays[:n]])
        if appended:
            fields = self._resumed_samples
            acc_sum, div_sum, nint_sum = arrays[n:]
        else:
            fields, acc_sum, div_sum, nint_sum = arrays[n:]
        done = int(header["step"])
        if fields.shape[1] < done:
            raise ReadCheckpointError(f"{self.folder} holds fewer samples than its step {done}; it was left untouched")
        self._chunks = int(header.get("host", {}).get("chunks", 0))
        return {"states": states, "params": params, "fields": fields, "acc_sum": acc_sum.copy(),
                "div_sum": div_sum.copy(), "nint_sum": nint_sum.copy(), "done": done}

    def after_sampling_chunk(self, done: int, states, params, fields, acc_sum, div_sum, nint_sum, *, final: bool) -> None:
        """Save after every `every`-th chunk: append the samples drawn since the last checkpoint to
        the log, then replace the header with the chain states, adapted params and running
        diagnostic sums (constant size): bytes written per checkpoint do not grow with the run."""
        self._chunks += 1
        if not self.due(self._chunks) or final:
            return  # the final chunk is followed by the output itself
        leaves = [np.asarray(x) for x in jax.tree.leaves((states, params))]
        block = np.asarray(fields)[:, self._saved:done]
        if block.dtype.kind in "fc" and not np.all(np.isfinite(block)):
            raise NumericalFaultError(
                f"non-finite field values before sample {done}; the checkpoint in {self.folder} was kept at its last good step"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        log = append_samples(self.folder, self._log, block)
        self.save(done, leaves + [acc_sum, div_sum, nint_sum],
                  {"chunks": self._chunks, "every": self.every, "samples": log})
        self._saved, self._log = done, log

    def remove(self) -> None:
        """Delete the checkpoint once the final output is safely written, and its folder if rgdiff
        created it and it is then empty (a user's own --checkpoint-dir stays, with its files)."""
        for name in (FILE, SAMPLES_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()
        if self._own_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()


def check_checkpoint_folder(folder: Path) -> None:
    """Refuse, before any work, a checkpoint folder that cannot be written (a read-only file
    system, a name too long, a device): one line naming --checkpoint-dir."""
    from rgdiff.io.locking import check_output_path

    folder = Path(folder)
    if folder.is_dir():
        check_output_path(folder / FILE, "--checkpoint-dir")
    else:
        check_output_path(folder, "--checkpoint-dir", make_parents=True)


def append_samples(folder: Path, committed: dict | None, block: np.ndarray) -> dict:
    """Append `block` (chains, n, *lattice) to the samples log in `folder` after its committed
    length (cutting off anything a killed run wrote beyond it); fsync; return the log's new
    record for the header (not yet committed: the caller writes the header)."""
    block = np.ascontiguousarray(block, dtype=np.asarray(block).dtype.newbyteorder("<"))
    if committed is None:
        committed = {"file": SAMPLES_FILE, "bytes": 0, "samples": 0, "sha256": "", "dtype": block.dtype.str,
                     "shape": [block.shape[0], *block.shape[2:]]}
    elif [block.shape[0], *block.shape[2:]] != committed["shape"] or block.dtype.str != committed["dtype"]:
        raise RgdiffError(f"samples of shape {block.shape} {block.dtype} do not continue the log in {folder}")
    record = _RECORD.pack(_RECORD_MAGIC, block.shape[1]) + memoryview(block).cast("B").tobytes()
    path = folder / SAMPLES_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, committed["bytes"])
        view, offset = memoryview(record), committed["bytes"]
        while view:  # pwrite may write less than asked
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        os.fsync(fd)
    finally:
        os.close(fd)
    chained = hashlib.sha256(committed["sha256"].encode() + record).hexdigest()
    return {**committed, "bytes": committed["bytes"] + len(record), "samples": committed["samples"] + block.shape[1],
            "sha256": chained}


def read_samples_log(folder: Path, spec: dict) -> np.ndarray:
    """The committed samples (chains, samples, *lattice) of the log in `folder`, verified against
    the hash chain `spec` recorded in the header."""
    path = Path(folder) / SAMPLES_FILE
    try:
        length, count, chained = int(spec["bytes"]), int(spec["samples"]), str(spec["sha256"])
        dtype, (chains, *tail) = np.dtype(spec["dtype"]), [int(n) for n in spec["shape"]]
    except (KeyError, TypeError, ValueError):
        raise ReadCheckpointError(f"{folder} has a damaged header (samples log record); it was left untouched") from None
    try:
        with open(path, "rb") as f:
            raw = f.read(length)
    except FileNotFoundError:
        raise ReadCheckpointError(f"{folder} has lost its samples log ({SAMPLES_FILE}); it was left untouched") from None
    except OSError as exc:
        raise ReadCheckpointError(f"cannot read {path} ({exc.strerror})") from None
    if len(raw) < length:
        raise ReadCheckpointError(f"{path} is truncated ({len(raw)} of {length} bytes); it was left untouched")
    per_sample = chains * int(np.prod(tail, dtype=np.int64)) * dtype.itemsize
    blocks, pos, h = [], 0, ""
    while pos < length:
        magic, n = _RECORD.unpack_from(raw, pos) if pos + _RECORD.size <= length else (b"", 0)
        end = pos + _RECORD.size + n * per_sample
        if magic != _RECORD_MAGIC or end > length:
            break  # the chain check below refuses it
        h = hashlib.sha256(h.encode() + raw[pos:end]).hexdigest()
        blocks.append(np.frombuffer(raw, dtype, n * per_sample // dtype.itemsize, pos + _RECORD.size).reshape(chains, n, *tail))
        pos = end
    if pos != length or h != chained or sum(b.shape[1] for b in blocks) != count:
        raise ReadCheckpointError(
            f"{path} is corrupt (its SHA-256 chain does not match the one recorded); it was left untouched"
        )
    return np.concatenate(blocks, axis=1) if blocks else np.empty((chains, 0, *tail), dtype)


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
