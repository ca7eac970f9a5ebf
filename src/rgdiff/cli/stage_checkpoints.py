"""Checkpoints of the hour-long jobs made of stages, `rgdiff reproduce` and `rgdiff run`: they
resume where they stopped.

The checkpoint folder (`--checkpoint-dir`, default OUT.ckpt) keeps what the run has finished and
checkpoints what it is doing, with the mechanisms of `rgdiff sample` and `rgdiff train`
(`rgdiff.io.checkpoint`)::

    checkpoint.rgdiff     the run itself: its command ("reproduce" or "run"), its configuration
                          and identity (the configuration less the output folder, plus every
                          setting); a `--resume` with other settings is refused
    uv.h5                 reproduce: the UV ensemble, once sampled (a checksummed ensemble,
                          `rgdiff.io.ensemble`)
    ensemble.h5           run: the same, with the metadata `rgdiff sample` writes
    uv.ckpt/              while sampling: the sampling checkpoint (every chunk)
    models/NAME/          a finished training (a checksummed model directory, `rgdiff.io.modeldir`)
    train-NAME/           while training NAME: its training checkpoint (every K steps)

A resumed run skips the finished stages (their results are read back, verified) and continues
an interrupted stage from its own checkpoint; every random number is drawn from the run's seed
as in an uninterrupted run, so on the CPU the resumed run's data are bitwise the same. Stages
after the last training (measurements, the learned flow, figures) have no checkpoint of their own
and are done again. The folder is removed once the run's folder is written (only what rgdiff
created in it: a user's own --checkpoint-dir stays).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np

from rgdiff.io.checkpoint import FILE, Checkpointer

UV, ENSEMBLE, UV_CKPT, MODELS = "uv.h5", "ensemble.h5", "uv.ckpt", "models"


class StageCheckpoints:
    """The checkpoint folder of one `rgdiff reproduce` or `rgdiff run` (module docstring).

    - `config`: the run's configuration (recorded; `--resume` reads it back);
    - `identity`: what must agree for a resume (for reproduce: figure, quick, seed, algorithm,
      settings; for run: its configuration);
    - `every`: training steps between checkpoints; `resume`: continue the run in `folder`;
    - `command`: "reproduce" or "run" (a checkpoint of one is refused by the other)."""

    def __init__(self, folder: Path, *, config: dict, identity: dict, every: int | None, resume: bool,
                 command: str = "reproduce"):
        self.folder = Path(folder)
        self.run = Checkpointer.for_command(command, out=self.folder, resume=self.folder if resume else None,
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
        from rgdiff.io.ensemble import Ensemble, load_ensemble
        from rgdiff.samplers.uv import sample

        def draw(ckpt):
            result = sample(theory, settings, key=key, callback=callback, checkpoint=ckpt)
            return Ensemble(theory, result.fields, markov=True, sampler=settings.describe(),
                            diagnostics=result.diagnostics, extra={"stage": "rgdiff reproduce: UV ensemble"})

        return load_ensemble(self.kept_ensemble(UV, draw, config={"reproduce_uv": settings.describe()},
                                                identity={"theory": theory.describe(), "sampler": settings.describe(),
                                                          "key": _key_id(key)})).fields

    def kept_ensemble(self, name: str, draw, *, config: dict, identity: dict) -> Path:
        """The ensemble file `name` in the folder: there already (an earlier process sampled it),
        or `draw(checkpointer)` (an `Ensemble`, sampled with that sampling checkpoint, continued if
        one is there) saved under `name`. `identity`: what the sampling checkpoint must agree on."""
        from rgdiff.io.ensemble import save_ensemble

        path = self.folder / name
        if path.exists():
            self.earlier.append("uv_sampling")
            return path
        sub = self.folder / UV_CKPT
        resuming = (sub / FILE).exists()
        if resuming:
            self.earlier.append("uv_sampling (part)")
        ckpt = Checkpointer(sub, command="sample", every=1, config=config, identity=identity, resume=resuming)
        save_ensemble(path, draw(ckpt))
        ckpt.remove()
        with contextlib.suppress(OSError):
            sub.rmdir()
        return path

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

    def kept_score_model(self, name: str, train) -> Path:
        """The model directory of the finished training `name`: there already, or written by
        `train(out, checkpoint_dir, resume)` (`rgdiff.cli.jobs.train_job`'s arguments: the model
        folder, its training checkpoint folder, and that folder again where a checkpoint is there
        to continue, else None)."""
        folder = self.folder / MODELS / name
        if folder.is_dir():
            self.earlier.append(f"train_{name}")
            return folder
        sub = self.folder / f"train-{name}"
        resuming = (sub / FILE).exists()
        if resuming:
            self.earlier.append(f"train_{name} (part)")
        (self.folder / MODELS).mkdir(exist_ok=True)
        train(folder, sub, sub if resuming else None)
        with contextlib.suppress(OSError):
            sub.rmdir()
        return folder

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
        """Delete what rgdiff wrote in the folder, once the run's folder is written (and the folder
        if rgdiff created it)."""
        for name in (UV, ENSEMBLE, UV_CKPT, MODELS):
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
