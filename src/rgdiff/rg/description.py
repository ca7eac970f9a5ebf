"""Schemes as data: `scheme_from_description(scheme.describe())` rebuilds an equal scheme.

This is how a model directory records its scheme (`config.toml` [scheme]) and how
`rgdiff.io.modeldir.load_model_dir` gets it back. Every scheme class has one description:

    {"name": "carosso", "M", "noise", "speed"}
    {"name": "polchinski", "M", "profile"}
    {"name": "wegner-morris", "label", "M", "beta", "gamma", "n_quad", "n_panels"}
    {"name": "rescaled" | "field-renormalized", "base": {a scheme}, "scale": {a field scale}}

with the rate functions and scales described as parts (`rgdiff.rg.base.describe_part`): a
number, or a table tagged by "function" (or "scale") naming a describable part. A plain Python
function is described as `{"python": name}`, which records it but cannot rebuild it: such a
scheme is refused here, so it is never written into a directory that could not be loaded.
"""

from __future__ import annotations

from rgdiff.errors import InvalidSchemeError
from rgdiff.rg.base import AbstractLinearScheme
from rgdiff.rg.rescaling import ExponentialScale, FieldRenormalized, Rescaled
from rgdiff.rg.schemes import Carosso, Polchinski
from rgdiff.rg.wegner_morris import LinearInW, PolchinskiProfile, ProfileBeta, ProfileGamma, SeedBeta, SeedGamma, WegnerMorris


def _fields(desc, what: str, required: tuple, optional: tuple = ()) -> dict:
    if not isinstance(desc, dict):
        raise InvalidSchemeError(f"a {what} description must be a table, got {desc!r}")
    missing = [k for k in required if k not in desc]
    unknown = sorted(set(desc) - set(required) - set(optional))
    if missing or unknown:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"] if unknown else [])
        raise InvalidSchemeError(f"the {what} description {desc!r} is not valid ({'; '.join(problems)})")
    return desc


def part_from_description(desc):
    """The inverse of `describe_part`: a number, or the describable part a table names."""
    if isinstance(desc, (int, float)) and not isinstance(desc, bool):
        return float(desc)
    if isinstance(desc, dict) and "python" in desc:
        raise InvalidSchemeError(
            f"the scheme holds the Python function {desc['python']}, which cannot be rebuilt from a description; "
            "build it from describable parts (numbers, PolchinskiProfile, LinearInW, ExponentialScale) to save it"
        )
    if isinstance(desc, dict) and desc.get("scale") == "exponential":
        return ExponentialScale(_fields(desc, "field scale", ("scale", "rate"))["rate"])
    kind = desc.get("function") if isinstance(desc, dict) else None
    if kind == "polchinski-profile":
        return PolchinskiProfile(_fields(desc, kind, ("function", "kind"))["kind"])
    if kind == "linear-in-w":
        d = _fields(desc, kind, ("function", "constant", "slope"))
        return LinearInW(d["constant"], d["slope"])
    if kind in ("profile-beta", "profile-gamma"):
        profile = part_from_description(_fields(desc, kind, ("function", "profile"))["profile"])
        return (ProfileBeta if kind == "profile-beta" else ProfileGamma)(profile)
    if kind == "seed-beta":
        d = _fields(desc, kind, ("function", "cutoff_function", "seed_kernel"))
        return SeedBeta(part_from_description(d["cutoff_function"]), part_from_description(d["seed_kernel"]))
    if kind == "seed-gamma":
        return SeedGamma(part_from_description(_fields(desc, kind, ("function", "cutoff_function"))["cutoff_function"]))
    raise InvalidSchemeError(f"unknown scheme ingredient {desc!r}")


def scheme_from_description(desc) -> AbstractLinearScheme:
    """The scheme whose `describe()` is `desc` (also after a round trip through TOML or JSON).

    Raises `InvalidSchemeError` for an unknown or incomplete description, or one holding a Python
    function that cannot be rebuilt."""
    name = desc.get("name") if isinstance(desc, dict) else None
    if name == "carosso":
        d = _fields(desc, name, ("name", "M"), ("noise", "speed"))
        return Carosso(d["M"], noise=d.get("noise", 1.0), speed=d.get("speed", 1.0))
    if name == "polchinski":
        d = _fields(desc, name, ("name", "M"), ("profile",))
        return Polchinski(d["M"], d.get("profile", "slow"))
    if name == "wegner-morris":
        d = _fields(desc, name, ("name", "label", "M", "beta", "gamma", "n_quad", "n_panels"))
        return WegnerMorris(part_from_description(d["beta"]), part_from_description(d["gamma"]), M=d["M"],
                            name=d["label"], n_quad=d["n_quad"], n_panels=d["n_panels"])
    if name in ("rescaled", "field-renormalized"):
        d = _fields(desc, name, ("name", "base", "scale"))
        cls = Rescaled if name == "rescaled" else FieldRenormalized
        return cls(scheme_from_description(d["base"]), part_from_description(d["scale"]))
    raise InvalidSchemeError(
        f"unknown RG scheme description {desc!r}; expected a table with name carosso, polchinski, "
        "wegner-morris, rescaled or field-renormalized"
    )


def require_reloadable(scheme: AbstractLinearScheme) -> dict:
    """`scheme.describe()`, after checking that it rebuilds an equal scheme (call before saving)."""
    desc = scheme.describe()
    if scheme_from_description(desc) != scheme:
        raise InvalidSchemeError(f"the scheme {desc!r} is not rebuilt faithfully from its description")
    return desc
