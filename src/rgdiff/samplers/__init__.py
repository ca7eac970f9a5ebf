"""Exact samplers of the UV theory exp(-S).

- `samplers.uv`: the UV ensembles: many chains at once, Stan's window adaptation, checkpoints.
- `samplers.hmc`: how a UV chain moves (`UVMove`): Fourier-accelerated HMC (default) or NUTS,
  plain NUTS / HMC; `hmc_refresh` (one Fourier-accelerated trajectory per configuration of a
  batch).
- `samplers.fourier`: the Fourier coordinates (orthonormal Hartley modes whitened by the free
  propagator) and the orbit-averaged adaptive metric.
- `samplers.imh`: the independence-Metropolis kernel with an exact proposal density, and the
  importance-sampling ESS.
- `samplers.bridge`: the bridge sampler: learned-model proposals (`rgdiff.generate.proposal`)
  corrected by independence Metropolis, interleaved with HMC on the UV action.
- `samplers.tempering`: RG parallel tempering: replicas at RG times 0 = t_0 < ... < t_K (level 0
  exp(-S), level k the model's p^theta_{t_k}), latent pCN moves, non-reversible (even/odd)
  exchanges, round trips, and levels chosen from measured exchange rates (`choose_levels`).
"""
