# %% [markdown]
# # rgdiff in ten minutes: the benchmark line, N = 8
#
# This script is a notebook: editors that know `# %%` cells (VS Code, PyCharm, Spyder, Jupytext)
# open it cell by cell; `python examples/tutorial.py` runs it top to bottom, and the test suite
# runs it on every CI run (`tests/test_tutorial.py`, about a minute on two CPU cores).
#
# We take lattice phi^4 theory in d = 2 on the standard benchmark line (lattice units, N = 8,
# m2 = -4, lam = 6 x 6.008; L/xi ~ 4), then
#
# 1. sample it exactly (Fourier-accelerated HMC),
# 2. measure it: m_R, Z, lambda_R with Gamma-method errors, the correlators G(x), C(t) and the
#    cosh effective mass,
# 3. flow it with the exact Carosso kernel and watch the couplings run,
# 4. train a small renormalizing diffusion model (an EFT-structured score),
# 5. compare its learned flow with the true one,
# 6. use it in the bridge sampler, an exact MCMC for the UV theory.
#
# Conventions (Fourier normalization, estimators, schemes) are on the conventions page,
# `docs/conventions.md`. Sizes here are tiny so that it runs in a minute; the comments say what
# to change for a real run.

# %%
import os

import jax

jax.config.update("jax_enable_x64", True)  # rgdiff samples and measures in float64 (it warns otherwise)

import numpy as np

from rgdiff.observables.compare import discrepancy, learned_flow
from rgdiff.observables.estimators import measure
from rgdiff.observables.true_flow import flow_grid, flow_path, true_flow
from rgdiff.rg import make_scheme
from rgdiff.samplers.bridge import BridgeSettings, run_bridge
from rgdiff.samplers.uv import SamplerSettings, sample
from rgdiff.theory.phi4 import make_phi4
from rgdiff.train.initial import initial_model
from rgdiff.train.score import TrainSettings, default_horizon, train

QUICK = os.environ.get("RGDIFF_TUTORIAL_FULL") is None  # set RGDIFF_TUTORIAL_FULL=1 for longer runs
key = jax.random.key(0)

# %% [markdown]
# ## 1. Sample the UV theory
#
# `make_phi4` takes the theory in any of the conventions of the literature (`units="lattice"`,
# `"albergo"`, `"hopping"`, or physical units with a side length L) and converts it to ours.

# %%
theory = make_phi4(2, 8, units="lattice", m2=-4.0, lam=36.048)
settings = SamplerSettings("fa-hmc", chains=4, samples=400 if QUICK else 5000, warmup=200 if QUICK else 1000)
uv = sample(theory, settings, key=jax.random.fold_in(key, 1))
print("fields", uv.fields.shape, "acceptance per chain", np.round(uv.diagnostics["acceptance_rate"], 2))

# %% [markdown]
# ## 2. Measure
#
# Every estimate carries its error (Gamma method, chains as replicas), tau_int, R-hat, ESS and a
# verdict on whether its error bar can be trusted. `correlators` holds G(x), C(t) and m_eff(t).

# %%
m = measure(uv.fields, theory.lattice)
for name in ("m_R", "effective_mass", "Z", "lambda_R", "chi"):
    est = m.observables[name]
    print(f"{name:15s} {est}   tau_int {est.tau_int:.2f}   reliable {est.reliable}")
corr = m.correlators
print("separations", corr["separation"])
print("C(t)        ", np.round(corr["C_t"]["value"], 4))
print("m_eff(t)    ", [None if v is None else round(v, 3) for v in corr["m_eff"]["value"]])

# %% [markdown]
# The second-moment mass m_R and the cosh effective mass at t* = N/4 agree within errors; on a
# free field both are exact (m_R = sqrt(m2), m_eff = (2/eps) asinh(eps m / 2)).
#
# ## 3. The true RG flow
#
# The M-modified Carosso scheme pushes every configuration through its exact Gaussian kernel;
# the observables are measured along RG time t (log-spaced: the couplings run fastest early).

# %%
scheme = make_scheme("carosso", M=1.0)
times = flow_grid(2.0, 6, t_min=1e-2)
truth, _ = true_flow(scheme, uv.fields, theory.lattice, times, key=jax.random.fold_in(key, 2))
for i, t in enumerate(times):
    print(f"t = {t:7.3g}   m_R = {truth.observables['m_R'][i]}   Z = {truth.observables['Z'][i]}   "
          f"r_t = {truth.r_t[i]:.3g}")

# One configuration along the flow is one sample path of the SDE: exact transitions from t_{k-1}
# to t_k with independent noise.
path = flow_path(scheme, jax.random.fold_in(key, 3), uv.fields[0, -1], times, theory.lattice)
print("path", path.shape, "site std along t", np.round(path.std(axis=(1, 2)), 3))

# %% [markdown]
# ## 4. Train a renormalizing diffusion model
#
# The EFT-structured score s = f_1(t) Delta phi + f_2(t) phi + f_3(t) phi^3 + (a residual) is
# trained by denoising score matching on the exact kernel; its f_i(t) are running couplings, and
# at t = 0 they estimate the bare ones (m2 = -f_2/f_1, lam = -6 f_3/f_1). The horizon T is when
# the kernel has forgotten the data, so generation starts from the exact stationary law.

# %%
horizon = default_horizon(scheme, uv.fields, theory.lattice)
model = initial_model("eft-score", theory.lattice, scheme, uv.fields, horizon, key=jax.random.fold_in(key, 4))
train_settings = TrainSettings(steps=200 if QUICK else 2000, batch=16 if QUICK else 64, horizon=horizon, dtype="float64")
model = train(model, scheme, theory.lattice, uv.fields, train_settings, key=jax.random.fold_in(key, 5))
f1, f2, f3 = (float(x) for x in model.couplings(jax.numpy.zeros(())))
print(f"T = {horizon:.3g}; learned at t = 0: m2 = {-f2 / f1:.3f} (bare -4), lam = {-6 * f3 / f1:.2f} (bare 36.05)")

# %% [markdown]
# ## 5. Learned versus true flow
#
# Samples of the model at each t (here the reverse SDE from p_T, which forgives an undertrained
# score; `solver="ode"` is the probability-flow ODE), measured like the true flow; the discrepancy
# is the mean over t of |learned - true| / combined error (1: agreement within errors).

# %%
learned, _ = learned_flow(model, scheme, times, key=jax.random.fold_in(key, 6), n=128 if QUICK else 2000,
                          horizon=horizon, uv_mapped=truth.meta["vacuum"] == "mapped", solver="sde", steps=16)
print("discrepancy", {k: None if v is None else round(v, 2) for k, v in discrepancy(learned.as_json(), truth.as_json()).items()})

# %% [markdown]
# ## 6. The bridge sampler
#
# Model samples as independence-Metropolis proposals with their exact ODE likelihood, interleaved
# with `hmc_steps_between` HMC steps on the UV action: exact for the UV theory whatever the
# model's quality; a good model only makes it mix faster. The quick run uses proposals alone
# (pure independence Metropolis, also exact; the HMC moves need the ODE run backwards after each
# move, which takes a while to compile); a 200-step model is accepted ~10% of the time, one
# trained for 2000 steps far more often.

# %%
bridge_settings = BridgeSettings(chains=2, samples=40 if QUICK else 1000, hmc_steps_between=0 if QUICK else 1,
                                 warmup=20 if QUICK else 200, ode_steps=32)
bridged = run_bridge(model, scheme, theory, bridge_settings, key=jax.random.fold_in(key, 7), T=horizon)
d = bridged.diagnostics
print(f"bridge: IMH acceptance {d['imh_acceptance']:.2f}, tau_int(|M|) {d['tau_int_abs_M']:.2f}, "
      f"fields {bridged.fields.shape}")

# %% [markdown]
# ## Next
#
# The same steps from the command line: `rgdiff sample`, `rgdiff measure --json`, `rgdiff flow`,
# `rgdiff train`, `rgdiff compare-flow`, `rgdiff bridge` (README); the paper's figures:
# `rgdiff reproduce fig6 --quick`. On a GPU, install `jax[cuda12]` (docs/install.md).
