"""Data parallelism over a 1-D device mesh (`rgdiff.parallel`): a run with the batch split over 4
(forced host) devices equals the single-device run: training losses and parameters (float64, to
round-off of the gradient all-reduce), HMC chains and the kernel push-forward (bitwise), NUTS chains
(one after another on each device; to round-off)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from rgdiff import parallel

SCRIPT = textwrap.dedent(
    """
    import json
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from rgdiff.models import ConvScore
    from rgdiff.rg import make_scheme
    from rgdiff.samplers.uv import SamplerSettings, sample
    from rgdiff.theory.phi4 import make_phi4
    from rgdiff import parallel
    from rgdiff.train.score import TrainSettings, train

    devices = jax.devices()
    theory = make_phi4(2, 4, units="lattice", m2=-4.0, lam=36.0)
    lattice, scheme = theory.lattice, make_scheme("carosso", M=1.0)
    fields = np.random.default_rng(0).normal(size=(32, 4, 4))
    runs = {}
    for name, mesh in (("one", parallel.batch_mesh(devices[:1])), ("many", parallel.batch_mesh(devices))):
        losses = []
        model = ConvScore(lattice, time_scale=1.0, channels=8, num_layers=1, mlp_width=8, num_time_basis=4,
                          prior=(1.0, 4.0, -6.0), key=jax.random.key(0))
        settings = TrainSettings(steps=3, batch=8, dtype="float64", log_every=1, horizon=1.0)
        model = train(model, scheme, lattice, fields, settings, key=jax.random.key(1), mesh=mesh,
                      on_log=lambda record, _: losses.append(record["loss"]))
        chains = sample(theory, SamplerSettings("hmc", chains=4, samples=5, warmup=0), key=jax.random.key(2), mesh=mesh)
        nuts = sample(theory, SamplerSettings("nuts", chains=4, samples=5, warmup=0, lockstep=False), key=jax.random.key(2), mesh=mesh)
        phi0 = parallel.shard_batch(jnp.asarray(fields[:8]), mesh)
        pushed = jax.jit(lambda k, x: scheme.push_forward(k, x, 0.2, lattice))(jax.random.key(3), phi0)
        runs[name] = {
            "losses": losses,
            "params": [np.asarray(p).ravel().tolist() for p in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))],
            "chains": np.asarray(chains.fields).ravel().tolist(),
            "nuts_chains": np.asarray(nuts.fields).ravel().tolist(),
            "pushed": np.asarray(pushed).ravel().tolist(),
            "pushed_devices": len(pushed.sharding.device_set),
        }
    print("RESULT" + json.dumps({"devices": len(devices), "runs": runs}))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_four_devices_really_split_the_batch(four_devices):
    assert four_devices["devices"] == 4
    assert four_devices["runs"]["one"]["pushed_devices"] == 1
    assert four_devices["runs"]["many"]["pushed_devices"] == 4


def test_training_equals_single_device(four_devices):
    one, many = four_devices["runs"]["one"], four_devices["runs"]["many"]
    np.testing.assert_allclose(many["losses"], one["losses"], rtol=1e-12, atol=0)
    for a, b in zip(one["params"], many["params"], strict=True):
        a, b = np.asarray(a), np.asarray(b)
        # Adam divides by sqrt(second moment): summation-order round-off of tiny gradients is
        # amplified, so compare on the scale of each parameter array
        assert np.max(np.abs(a - b)) <= 1e-9 * max(1.0, np.max(np.abs(a))), np.max(np.abs(a - b))


def test_sampling_and_push_forward_equal_single_device(four_devices):
    one, many = four_devices["runs"]["one"], four_devices["runs"]["many"]
    np.testing.assert_array_equal(np.asarray(many["chains"]), np.asarray(one["chains"]))
    # NUTS chains run one after another on each device, the devices in parallel
    np.testing.assert_allclose(np.asarray(many["nuts_chains"]), np.asarray(one["nuts_chains"]), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(many["pushed"]), np.asarray(one["pushed"]))


def test_one_device_mesh_and_divisibility():
    mesh = parallel.batch_mesh(jax.devices()[:1])
    assert parallel.mesh_size(mesh) == 1
    x = parallel.shard_batch(np.arange(6.0).reshape(3, 2), mesh)
    np.testing.assert_array_equal(np.asarray(x), np.arange(6.0).reshape(3, 2))
    assert parallel.mesh_size(parallel.mesh_for_batch(7, jax.devices()[:1] * 1)) == 1


def test_indivisible_batch_is_refused():
    class FakeMesh:  # only the device grid's size matters to the check
        devices = np.empty((4,))

    with pytest.raises(parallel.InvalidMeshError, match="does not split evenly over 4 devices"):
        parallel.check_divisible(6, FakeMesh())
