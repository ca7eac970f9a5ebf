"""Variational ground states of lattice phi^4 with a renormalizing-flow ansatz (paper section 6).

- `hamiltonian`: the Hamiltonian [6.3], [6.9] (potential V, kinetic prefactor, momenta).
- `exact`: free-field E0, Gaussian (Hartree) states in closed form, exact diagonalization (<= 4
  sites), and a rigorous lower bound on E0 for every lattice.
- `ansatz`: Psi = sqrt(p_theta), p_theta a neural-ODE push-forward of a free ground state of mass M.
- `energy`: score form and local-energy form of [6.13]; the pathwise variational gradient; the
  RK4 transport's error in the training objective and under control at evaluation.
- `verify`: impossible results (forms that disagree, energies below E0 or the bound) refused.
- `train`: the Optax loop; `rgdiff.cli.ground_state`: one `rgdiff ground-state` run with its outputs.
"""

from rgdiff.quantum.ansatz import FlowAnsatz as FlowAnsatz
from rgdiff.quantum.energy import estimate_energy as estimate_energy, measure_energy as measure_energy
from rgdiff.quantum.exact import best_gaussian as best_gaussian, converged_ground_energy as converged_ground_energy, exact_diagonalization as exact_diagonalization, free_ground_energy as free_ground_energy, gaussian_state as gaussian_state, harmonic_lower_bound as harmonic_lower_bound
from rgdiff.quantum.hamiltonian import Hamiltonian as Hamiltonian
from rgdiff.quantum.train import GroundStateSettings as GroundStateSettings, train as train
from rgdiff.quantum.verify import verify as verify
