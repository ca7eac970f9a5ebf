import jax
import pytest

jax.config.update("jax_enable_x64", True)
# No silent up- or down-casts: a float32 model meeting float64 data must say so (equinox, diffrax).
jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow statistical tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs():
    """Free JAX's compiled programs after each test module. Each XLA:CPU executable holds ~6 memory
    maps; the whole suite compiles more than the kernel's vm.max_map_count (65530) allows, and XLA
    then aborts (SIGABRT/SIGSEGV) inside a compile late in the run."""
    yield
    import gc

    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def normal_ensemble():
    """Write an ensemble of standard-normal 4 x 4 fields labelled as a small phi^4 theory, for
    tests of bookkeeping (files, resume, provenance, refusals), where the physics of the fields
    does not matter and sampling them would only cost time. Returns the path written."""
    import numpy as np

    from rgdiff.io.ensemble import Ensemble, save_ensemble
    from rgdiff.theory.phi4 import make_phi4

    def write(path, chains: int, samples: int, *, rng_seed: int = 0, seed: int = 0, markov: bool = True, **ensemble):
        theory = make_phi4(2, 4, units="lattice", m2=1.0, lam=2.0)
        fields = np.random.default_rng(rng_seed).normal(size=(chains, samples, 4, 4))
        save_ensemble(path, Ensemble(theory, fields, markov=markov, seed=seed, **ensemble))
        return path

    return write


@pytest.fixture
def getkey():
    """A fresh PRNG key per call, deterministic per test."""
    counter = iter(range(10**9))
    base = jax.random.key(1234)
    return lambda: jax.random.fold_in(base, next(counter))


def pytest_terminal_summary(terminalreporter):
    """Print how many hypothesis examples ran (property tests, e.g. tests/cli/test_hostile_input.py)."""
    import re

    passing = failing = invalid = tests = 0
    for reports in terminalreporter.stats.values():
        for report in reports:
            stats = getattr(report, "__dict__", {}).get("_hypothesis_stats")
            if not stats:
                continue
            tests += 1
            for p, f, i in re.findall(r"(\d+) passing, (\d+) failing, and (\d+) invalid", stats):
                passing, failing, invalid = passing + int(p), failing + int(f), invalid + int(i)
    if tests:
        terminalreporter.write_line(
            f"hypothesis: {passing + failing + invalid} examples run in {tests} property tests "
            f"({passing} passing, {failing} failing, {invalid} invalid)"
        )
