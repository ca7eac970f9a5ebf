"""Generation: from the stationary law p_T back to p_t.

- `generate.diffusion`: score models, through the probability-flow ODE [6.14] (with its exact
  log-likelihood) or the reverse SDE [5.25].
- `generate.transport`: continuous normalizing flows in RG time [5.8]: `decode` (p_T -> p_t, with
  log p_t^theta), `encode` (phi_t -> phi_T), `sample`; RK4 in log-time or adaptive Tsit5.
- `generate.proposal`: `AbstractProposal`, an exact density q with `sample(key, n) -> (fields,
  log_q)` and `log_prob(fields)`: `diffusion.ode_proposal` (score models) and
  `transport.FlowProposal` (CNFs), as the bridge sampler takes them.
- `generate.rk4`: the fixed-step classical RK4 scan (CNFs, the quantum flow ansatz).
"""
