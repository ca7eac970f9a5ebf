"""Large lattices do not crash natively (issue 16): XLA:CPU's YNN fusions made NUTS segfault from
about 25 000 sites (2D N = 160, 3D N = 32); `rgdiff._xla` turns them off before JAX starts."""

import os
import subprocess
import sys

import pytest

from rgdiff import _xla

ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}

# a reduction over 25 600 float64 numbers: the size from which XLA:CPU picks a YNN fusion
PROBE = """
import sys
if sys.argv[1] == "rgdiff":
    import rgdiff
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
x = jnp.ones(160 * 160)
print(jax.jit(lambda a, b: jnp.sum(a * b)).lower(x, x).compile().as_text().lower().count("ynn"))
"""


def ynn_fusions(importing: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, importing], env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


def test_importing_rgdiff_turns_off_the_crashing_fusions():
    if _xla._jaxlib_knows_flag():
        assert ynn_fusions("plain") > 0  # this jaxlib does fuse with YNNPACK: the probe can fail
    assert ynn_fusions("rgdiff") == 0


def test_flag_is_appended_not_clobbering_and_users_choice_wins():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    added = _xla.apply(env)
    assert added == _xla._jaxlib_knows_flag()
    if added:
        assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {_xla.FLAG}="
    mine = {"XLA_FLAGS": f"{_xla.FLAG}=eltwise"}
    assert not _xla.apply(mine) and mine["XLA_FLAGS"] == f"{_xla.FLAG}=eltwise"
    assert _xla._version("0.10.2") == (0, 10, 2) and _xla._version("0.11.0rc1") == (0, 11, 0)


@pytest.mark.slow
@pytest.mark.parametrize("dim, size, algorithm", [(2, 160, "nuts"), (3, 32, "fa-nuts")])
def test_nuts_on_lattices_that_crashed(tmp_path, dim, size, algorithm):
    """The probe's reproducers (exit 139 before): about 40 s each on a loaded 2-core machine."""
    out = tmp_path / "big.h5"
    cmd = [sys.executable, "-m", "rgdiff.cli", "sample", "--dim", str(dim), "--size", str(size), "--m2", "1", "--lam",
           "0.5", "--algorithm", algorithm, "--chains", "1", "--samples", "8", "--warmup", "0", "--quiet", "--out", str(out)]
    run = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["big.h5"]  # no stale lock
