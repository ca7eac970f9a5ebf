"""`rgdiff info FILE`: where an output came from.

Every rgdiff output records the configuration that produced it, the seed, the package versions
and the SHA-256 of its input files. `describe(path)` collects them from

- an ensemble (.h5): the theory, sampler settings, seed, diagnostics (divergent transitions), the
  command's configuration and the checksums of the model or file it came from, if any. Only the
  attributes are read (a 50 MB ensemble is described in milliseconds): they are verified against
  the recorded SHA-256, the fields are not ("integrity" says which; `rgdiff measure` and every
  other reader verify everything);
- FLOW.json / CMP.json / FIDELITY.json (any rgdiff JSON with a "meta" table);
- a model directory (config.toml + params.eqx), a `rgdiff run`/`reproduce` folder, or a checkpoint
  folder (`rgdiff.checkpoint`).

A file that is none of these is refused with one clear line.
"""

from __future__ import annotations

from pathlib import Path

from rgdiff.errors import RgdiffError
from rgdiff.io.atomic import file_checksum
from rgdiff.io.reading import loads_json, loads_toml, read_text, require_regular_file


class ReadProvenanceError(RgdiffError):
    """The file is not an rgdiff output whose provenance can be shown."""


def _checksums(tree, prefix="") -> dict:
    """Every `*sha256*` entry of a nested dict: the recorded checksums of the inputs."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            if "sha256" in str(k) and isinstance(v, str):
                out[name] = v
            else:
                out.update(_checksums(v, name))
    return out


def describe(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ReadProvenanceError(f"{path} does not exist")
    if path.is_dir():
        return _describe_folder(path)
    require_regular_file(path, ReadProvenanceError)  # a FIFO would hang, /dev/zero never end
    if path.suffix in (".h5", ".hdf5"):
        return _describe_ensemble(path)
    if path.suffix == ".json":
        return _describe_json(path)
    if path.suffix == ".toml":
        return _describe_toml(path)
    raise ReadProvenanceError(
        f"{path} is not an rgdiff output (expected an ensemble .h5, a .json result, a config .toml or a folder)"
    )


def _describe_ensemble(path: Path) -> dict:
    """Read lazily: the attributes and shapes only, verified against the recorded SHA-256 (see
    `rgdiff.io.ensemble.read_header`); the fields are neither read nor hashed, and the output
    says so. A damaged or foreign file is refused, never shown as valid."""
    from rgdiff.io.ensemble import FORMAT, read_header

    h = read_header(path)
    extra = h.extra if isinstance(h.extra, dict) else {}
    diag = h.diagnostics if isinstance(h.diagnostics, dict) else {}
    summary = {}
    if "divergences" in diag:
        summary["divergent_transitions"] = diag["divergences"]
    if "acceptance_rate" in diag:
        summary["acceptance_rate"] = diag["acceptance_rate"]
    return {
        "file": str(path),
        "kind": "ensemble",
        "format": f"{FORMAT} {h.format_version}",
        "content_sha256": h.sha256,
        "integrity": h.integrity,
        "created": h.created,
        "shape (chains, samples, *lattice)": list(h.shape),
        "theory": h.theory.describe(),
        "sampler": h.sampler,
        "seed": h.seed,
        "diagnostics": summary,
        "config": extra.get("config"),
        "command": extra.get("command") or extra.get("job"),
        "imported": extra.get("import"),
        "inputs": _checksums(extra),
        "versions": h.versions,
    }


def _describe_json(path: Path) -> dict:
    data = loads_json(read_text(path, ReadProvenanceError), path, ReadProvenanceError)
    if not isinstance(data, dict) or not isinstance(data.get("meta"), dict):
        raise ReadProvenanceError(f"{path} is not an rgdiff result (no 'meta' table)")
    meta = data["meta"]
    name = path.name.upper()
    kind = next((k for k in ("FLOW", "CMP", "FIDELITY") if k in name), "result")
    return {
        "file": str(path),
        "kind": kind,
        "sha256": file_checksum(path),
        "theory": meta.get("theory"),
        "seed": meta.get("seed", meta.get("uv_seed")),
        "config": meta.get("config") or {k: v for k, v in meta.items() if k in ("scheme", "uv_sampler", "sampler", "solver", "samples", "times")},
        "inputs": {**({"input": meta["input"]} if "input" in meta else {}), **({"data": meta["data"]} if "data" in meta else {}),
                   **_checksums(meta)},
        "versions": meta.get("versions"),
    }


def _describe_toml(path: Path) -> dict:
    data = loads_toml(read_text(path, ReadProvenanceError), path, ReadProvenanceError)
    return {
        "file": str(path),
        "kind": "configuration",
        "sha256": file_checksum(path),
        "command": data.get("command"),
        "seed": data.get("seed"),
        "config": {k: v for k, v in data.items() if k not in ("versions", "command")},
        "versions": data.get("versions"),
    }


def _describe_folder(path: Path) -> dict:
    from rgdiff.io.checkpoint import FILE as CKPT, read_checkpoint
    from rgdiff.io.modeldir import CONFIG, PARAMS

    if (path / CKPT).is_file():
        header, _ = read_checkpoint(path)
        return {
            "file": str(path),
            "kind": f"checkpoint of rgdiff {header.get('command')}",
            "step": header.get("step"),
            "created": header.get("created"),
            "payload_sha256": header.get("payload_sha256"),
            "config": header.get("config"),
            "inputs": _checksums(header.get("identity", {})),
            "versions": header.get("versions"),
        }
    if (path / CONFIG).is_file() and (path / PARAMS).is_file():
        from rgdiff.io.modeldir import verify_params

        config = loads_toml(read_text(path / CONFIG, ReadProvenanceError), path / CONFIG, ReadProvenanceError)
        tables = {}
        for name in ("training", "data", "command", "model", "scheme", "theory", "versions"):
            value = config.get(name, {})
            if not isinstance(value, dict):
                raise ReadProvenanceError(f"{path / CONFIG} is damaged: [{name}] must be a table, got {value!r:.40}")
            tables[name] = value
        integrity = verify_params(path, config, ReadProvenanceError)  # a damaged model is refused, never shown
        training, command = tables["training"], tables["command"]
        return {
            "file": str(path),
            "kind": "model directory",
            "format": f"{config.get('format')} {config.get('format_version')}",
            "params_sha256": config.get("params_sha256") or file_checksum(path / PARAMS),
            "integrity": integrity,
            "seed": training.get("seed"),
            "model": tables["model"],
            "scheme": tables["scheme"],
            "theory": tables["theory"],
            "training": training,
            "config": command.get("config") if isinstance(command.get("config"), dict) else None,
            "inputs": _checksums({"data": tables["data"]}),
            "data": tables["data"].get("file"),
            "versions": tables["versions"],
        }
    if (path / "config.toml").is_file():
        out = _describe_toml(path / "config.toml")
        out.update({"file": str(path), "kind": "output folder", "files": sorted(p.name for p in path.iterdir())})
        return out
    raise ReadProvenanceError(
        f"{path} is a folder but not an rgdiff model directory, output folder or checkpoint (no config.toml)"
    )


def format_text(info: dict) -> str:
    """Human-readable `key: value` lines; nested tables indented."""
    lines: list[str] = []

    def walk(d, indent):
        for k, v in d.items():
            if v is None or v == {} or v == []:
                continue
            if isinstance(v, dict):
                lines.append(f"{'  ' * indent}{k}:")
                walk(v, indent + 1)
            else:
                if isinstance(v, list) and len(v) > 8:
                    v = f"[{', '.join(map(str, v[:8]))}, ...] ({len(v)} values)"
                lines.append(f"{'  ' * indent}{k}: {v}")

    walk(info, 0)
    return "\n".join(lines) + "\n"
