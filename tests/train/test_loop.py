"""The one training loop (`rgdiff.train.loop.fit`): the non-finite rule, the parameter average
against its closed form, and bitwise resume of score, flow and ground-state training (CPU)."""

import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rgdiff.io.checkpoint import Checkpointer, NumericalFaultError, read_checkpoint
from rgdiff.train.loop import NonFiniteLossError, fit

# a scalar walked by SGD(0.05) on (w - 10)^2 from w = 0: w_j = 10 (1 - 0.9^j): 1, 1.9, 2.71, ...
SGD = optax.sgd(0.05)


def _walk(blow_up, w):
    return jnp.where(w > 2.5, jnp.nan, (w - 10.0) ** 2) if blow_up == "loss" else (w - 10.0) ** 2 + _spike(w)


@jax.custom_jvp
def _spike(w):
    """0, with a NaN derivative beyond w = 2.5: a finite loss whose gradient is not."""
    return jnp.zeros_like(w)


@_spike.defjvp
def _spike_jvp(primals, tangents):
    (w,), (dw,) = primals, tangents
    return _spike(w), jnp.where(w > 2.5, jnp.nan, 0.0) * dw


def _checkpointer(folder, resume=False, every=1):
    return Checkpointer(folder, command="train", every=every, config={}, identity={}, resume=resume)


@pytest.mark.parametrize("blow_up", ["loss", "gradient"])
def test_non_finite_stops_at_its_step_with_the_last_good_checkpoint(tmp_path, blow_up):
    """w_3 = 2.71 > 2.5: the fourth step (step 4, counted from 1) evaluates the parameters after step
    3 and finds them bad; the checkpoint of step 2 (w_2 = 1.9, whose loss and gradient were finite)
    is kept, marked so that it resumes with another learning rate."""
    ckpt = _checkpointer(tmp_path / "c")
    with pytest.raises(NonFiniteLossError) as info:
        fit(jnp.asarray(0.0), SGD, lambda w, s, d, k: (_walk(blow_up, w), (s, {})), key=jax.random.key(0),
            steps=10, checkpoint=ckpt)
    assert isinstance(info.value, NumericalFaultError)
    msg = str(info.value)
    assert "at step 4 " in msg and "last good checkpoint (step 2) is kept" in msg and "--resume" in msg, msg
    assert ("loss became nan" if blow_up == "loss" else "gradient became non-finite") in msg, msg
    header, arrays = read_checkpoint(tmp_path / "c")
    assert header["step"] == 2 and float(arrays[0]) == pytest.approx(1.9, rel=1e-12)
    assert "at step 4" in header["host"]["fault"]


def test_parameter_average_of_fit_is_the_closed_form():
    """With decay b the returned model is sum_j b^(k-j) (1 - b) w_j / (1 - b^k), w_j after step j."""
    b, steps = 0.8, 9
    history = []
    model, _ = fit(jnp.asarray(0.0), SGD, lambda w, s, d, k: ((w - 10.0) ** 2, (s, {})), key=jax.random.key(0),
                   steps=steps, ema=b, on_log=lambda r, m: history.append(float(m)))
    w = 10 * (1 - 0.9 ** np.arange(1, steps + 1))
    np.testing.assert_allclose(history, w, rtol=1e-12)
    weights = b ** (steps - np.arange(1, steps + 1)) * (1 - b)
    assert float(model) == pytest.approx(np.sum(weights * w) / (1 - b**steps), rel=1e-12)


def test_records_average_the_loss_and_carry_the_state():
    """The loss of a record is its mean since the last record; the state moves step by step."""
    records = []

    def loss_fn(w, count, data, key):
        return (w - data) ** 2, (count + 1, {"count": count})

    _, count = fit(jnp.asarray(0.0), SGD, loss_fn, key=jax.random.key(0), steps=5, state=jnp.asarray(0),
                   data=jnp.asarray(10.0), log_every=2, on_log=lambda r, m: records.append(r))
    losses = (10 * 0.9 ** np.arange(5)) ** 2
    assert [r["step"] for r in records] == [2, 4, 5] and int(count) == 5
    np.testing.assert_allclose([r["loss"] for r in records], [losses[:2].mean(), losses[2:4].mean(), losses[4]],
                               rtol=1e-12)
    assert [r["count"] for r in records] == [1, 3, 4]


def _bitwise_resume(tmp_path, run):
    """`run(checkpoint, callback)` uninterrupted (checkpoints every 2 steps; the one of step 2 is
    copied away at step 3) and resumed from that copy; both results, as lists of NumPy arrays."""
    first = _checkpointer(tmp_path / "a", every=2)

    def copy_at_step_3(stage, done, total):
        if done == 3:
            shutil.copytree(tmp_path / "a", tmp_path / "b")

    ref = run(first, copy_at_step_3)
    assert read_checkpoint(tmp_path / "b")[0]["step"] == 2
    resumed = run(_checkpointer(tmp_path / "b", resume=True, every=2), None)
    return [np.asarray(x) for x in jax.tree.leaves(ref)], [np.asarray(x) for x in jax.tree.leaves(resumed)]


def _assert_bitwise(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


def test_score_training_resumes_bitwise(tmp_path):
    from rgdiff.lattice.geometry import Lattice
    from rgdiff.models import ConvScore
    from rgdiff.rg import make_scheme
    from rgdiff.train.score import TrainSettings, train

    lattice = Lattice.lattice_units(2, 4)
    fields = np.random.default_rng(0).normal(size=(16, 4, 4))
    settings = TrainSettings(steps=5, batch=4, log_every=1)

    def run(checkpoint, callback):
        records = []
        model = ConvScore(lattice, time_scale=1.0, channels=4, num_layers=1, mlp_width=4, num_time_basis=4,
                          key=jax.random.key(0))
        model = train(model, make_scheme("carosso", M=1.0), lattice, fields, settings, key=jax.random.key(1),
                      checkpoint=checkpoint, callback=callback, on_log=lambda r, m: records.append(r["loss"]))
        return eqx.filter(model, eqx.is_array), records[-1]

    _assert_bitwise(*_bitwise_resume(tmp_path, run))


def test_flow_training_resumes_bitwise(tmp_path):
    """RG objective: the UV chains (IMH + HMC) are part of the saved state."""
    from rgdiff.rg import make_scheme
    from rgdiff.theory.phi4 import make_phi4
    from rgdiff.train.cnf import FlowTrainSettings, initial_flow, train_flow

    theory = make_phi4(1, 4, units="lattice", m2=1.0, lam=1.0)
    scheme = make_scheme("carosso", M=1.0)
    fields = np.random.default_rng(0).normal(size=(8, 4))
    settings = FlowTrainSettings(steps=5, batch=4, ode_steps=2, leapfrog=2, frequencies=1, time_bumps=2, log_every=1)

    def run(checkpoint, callback):
        records = []
        flow = initial_flow(theory.lattice, scheme, fields, 1.0, settings)
        flow = train_flow(flow, scheme, theory, settings, key=jax.random.key(1), uv_start=fields,
                          checkpoint=checkpoint, callback=callback, on_log=lambda r, f: records.append(r["loss"]))
        return eqx.filter(flow, eqx.is_array), records[-1]

    _assert_bitwise(*_bitwise_resume(tmp_path, run))


def test_ground_state_training_resumes_bitwise(tmp_path):
    from rgdiff.quantum.hamiltonian import Hamiltonian
    from rgdiff.quantum.train import GroundStateSettings, train

    h = Hamiltonian.make(1, 1, m2=1.0, lam=24.0)
    settings = GroundStateSettings(steps=5, batch=16, ode_steps=2)

    def run(checkpoint, callback):
        model, history = train(h, settings, 1.0, jax.random.key(1), callback, checkpoint=checkpoint)
        return eqx.filter(model, eqx.is_array), history

    ref, resumed = _bitwise_resume(tmp_path, run)
    _assert_bitwise(ref, resumed)
    assert ref[-1].shape == (5,) and np.all(np.isfinite(ref[-1]))  # the whole history, across the resume
