"""`rgdiff bench`: performance and scale, measured side by side in one run.

- `kernel`: exact RG kernel push-forward throughput vs a bare FFT round trip;
- `training`: gradient steps/s, samples/s and peak memory of the score models (and the CNF);
- `samplers`: ESS/s and tau_int of NUTS, HMC, Fourier-accelerated HMC and NUTS, the RG bridge
  and the flow at the paper's points and on the benchmark line, with the dynamic exponent z.

`runner.run_bench` runs them and writes the JSON (see the README for the `ratios` names).
"""

from rgdiff.bench.runner import BENCHMARKS as BENCHMARKS
from rgdiff.bench.runner import REQUIRED_RATIOS as REQUIRED_RATIOS
from rgdiff.bench.runner import run_bench as run_bench
