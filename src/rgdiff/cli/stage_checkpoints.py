"""Checkpoints of `rgdiff reproduce`: the hour-long figures resume where they stopped.

The checkpoint folder (`--checkpoint-dir`, default OUT.ckpt) keeps what the run has finished and
checkpoints what it is doing, with the mechanisms of `rgdiff sample` and `rgdiff train`
(`rgdiff.io.checkpoint`)::

    checkpoint.rgdiff     the run itself: command "reproduce", its configuration (figure, quick,
                          seed, algorithm, out) and identity (the same plus every setting); a
                          `--resume` of another figure or settings is refused
    uv.h5                 the UV ensemble, once sampled (a checksummed ensemble, `rgdiff.io.ensemble`)
    uv.ckpt/              while sampling: the sampling checkpoint (every chunk)
    models/NAME/          a finished training (a checksummed model directory, `rgdiff.io.modeldir`)
    train-NAME/           while training NAME: its training checkpoint (every K steps)

A resumed run skips the finished stages (their results are read back, verified) and continues
an interrupted stage from its own checkpoint; every random number is drawn from the run's seed
as in an uninterrupted run, so on the CPU the resumed figure's data are bitwise the same. The
folder is removed once the figure's folder is written (only what rgdiff created in it: a
user's own --checkpoint-dir stays).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np

from rgdiff.io.checkpoint import FILE, Checkpointer

UV, UV_CKPT, MODELS = "uv.h5", "uv.ckpt", "models"


class ReproduceCheckpoints:
    """The checkpoint folder of one `rgdiff reproduce` run (module docstring).

    - `config`: the run's configuration (recorded; `--resume` reads it back);
    - `identity`: what must agree for a resume (figure, quick, seed, algorithm, settings);
    - `every`: training steps between checkpoints; `resume`: continue the run in `folder`."""

    def __init__(self, folder: Path, *, config: dict, identity: dict, every: int | None, resume: bool):
        self.folder = Path(folder)
        self.run = Checkpointer.for_command("reproduce", out=self.folder, resume=self.folder if resume else None,
                                            every=100 if every is None else every, folder=self.folder, config=config,
                                            identity=identity)
        if resume and every is None:
            self.run.every = int(self.run.resumed[0].get("host", {}).get("every", 100))
        self.every = self.run.every
        # stages whose work an earlier process did ("train_rg": all of it; "train_rg (part)": some),
        # so that the timings of a resumed run do not pass for the whole cost
        self.earlier: list[str] = []
        if not resume:
            self.run.save(0, [], {"every": self.every})

    # the UV ensemble -------------------------------------------------------------------------

    def uv_fields(self, theory, settings, *, key, callback=None) -> np.ndarray:
        """The UV chains: read back (verified) if sampled already, else sampled with a sampling
        checkpoint every chunk (continued if one is there) and kept as uv.h5."""
        from rgdiff.io.ensemble import Ensemble, load_ensemble, save_ensemble
        from rgdiff.samplers.uv import sample

        path = self.folder / UV
        if path.exists():
            self.earlier.append("uv_sampling")
            return load_ensemble(path).fields
        sub = self.folder / UV_CKPT
        resuming = (sub / FILE).exists()
        if resuming:
            self.earlier.append("uv_sampling (part)")
        ckpt = Checkpointer(sub, command="sample", every=1, config={"reproduce_uv": settings.describe()},
                            identity={"theory": theory.describe(), "sampler": settings.describe(), "key": _key_id(key)},
                            resume=resuming)
        result = sample(theory, settings, key=key, callback=callback, checkpoint=ckpt)
        save_ensemble(path, Ensemble(theory, result.fields, markov=True, sampler=settings.describe(),
                                     diagnostics=result.diagnostics, extra={"stage": "rgdiff reproduce: UV ensemble"}))
        ckpt.remove()
        with contextlib.suppress(OSError):
            sub.rmdir()
        return result.fields

    # trainings -------------------------------------------------------------------------------

    def finished_model(self, name: str):
        """(flow, metrics records) of the finished training `name`, or None."""
        import json

        from rgdiff.io.modeldir import METRICS, load_model_dir

        folder = self.folder / MODELS / name
        if not folder.is_dir():
            return None
        self.earlier.append(f"train_{name}")
        loaded = load_model_dir(folder)  # verified against its params checksum
        text = (folder / METRICS).read_text()
        return loaded.model, [json.loads(line) for line in text.splitlines() if line.strip()]

    def training(self, name: str, config: dict, steps: int) -> Checkpointer:
        """The checkpoint of the training `name` of `steps` steps (continued if one is there); its
        identity is the model `config` less its versions."""
        sub = self.folder / f"train-{name}"
        identity = {k: v for k, v in config.items() if k != "versions"}
        ckpt = Checkpointer(sub, command="train", every=self.every, config=config, identity=identity,
                            resume=(sub / FILE).exists())
        ckpt.host_extra = {"metrics": list(ckpt.resumed[0]["host"].get("metrics", [])) if ckpt.resumed else []}
        if ckpt.resumed:
            self.earlier.append(f"train_{name} (part)")
        ckpt.total = steps
        return ckpt

    def keep_model(self, name: str, flow, config: dict, records: list[dict], ckpt: Checkpointer) -> None:
        """Keep the finished training `name` (a model directory), then drop its checkpoint."""
        from rgdiff.io.atomic import atomic_folder
        from rgdiff.train.cnf import write_flow_dir

        (self.folder / MODELS).mkdir(exist_ok=True)
        with atomic_folder(self.folder / MODELS / name) as work:
            write_flow_dir(work, flow, config, records, None)
        ckpt.remove()
        with contextlib.suppress(OSError):
            ckpt.folder.rmdir()

    # the end ---------------------------------------------------------------------------------

    def remove(self) -> None:
        """Delete what rgdiff wrote in the folder, once the figure is written (and the folder if
        rgdiff created it)."""
        for name in (UV, UV_CKPT, MODELS):
            path = self.folder / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        for sub in self.folder.glob("train-*"):
            shutil.rmtree(sub, ignore_errors=True)
        self.run.remove()


def _key_id(key) -> list[int]:
    import jax

    return np.asarray(jax.random.key_data(key)).ravel().tolist()
