"""Exact samplers of the UV theory exp(-S).

- `samplers.uv`: Blackjax NUTS / HMC with Stan's window adaptation, many chains at once.
- `samplers.bridge`: the bridge sampler: learned-model proposals (independence Metropolis with the
  exact model likelihood) interleaved with HMC on the UV action.
"""
