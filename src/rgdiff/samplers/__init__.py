"""Exact samplers of the UV theory exp(-S).

- `samplers.uv`: Blackjax NUTS / HMC with Stan's window adaptation, many chains at once, and
  `hmc_refresh` (one fixed-step HMC trajectory per configuration of a batch).
- `samplers.imh`: the independence-Metropolis kernel with an exact proposal density, and the
  importance-sampling ESS.
- `samplers.bridge`: the bridge sampler: learned-model proposals (`rgdiff.generate.proposal`)
  corrected by independence Metropolis, interleaved with HMC on the UV action.
"""
