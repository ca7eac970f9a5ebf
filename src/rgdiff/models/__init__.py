"""Score models s_theta(phi, t) ~ grad log p_t(phi) for renormalizing diffusion models [5.23].

- `EFTScore` ("eft-score"): the EFT-structured score [5.26] with learned running couplings and
  an exact divergence.
- `ConvScore` ("score"): a generic equivariant periodic conv net.
- `GaussianFlowScore`: the exact score of a flowed Gaussian (the reference model).
- `ContinuousFlow` ("cnf"): a CNF vector field in RG time (an `AbstractVelocityField`).

Bases: `AbstractScoreModel`, `AbstractExactScoreModel` (exact divergence), `AbstractVelocityField`.

Both act on one configuration (`jax.vmap` for batches), are scaled for a theory by
`from_theory` / `make_model`, and round-trip through `describe()` and `build_model`.
"""

from rgdiff.models._build import MODEL_CLASSES as MODEL_CLASSES
from rgdiff.models._build import FLOW_NAMES as FLOW_NAMES
from rgdiff.models._build import MODEL_NAMES as MODEL_NAMES
from rgdiff.models._build import build_model as build_model
from rgdiff.models._build import make_model as make_model
from rgdiff.models._errors import InvalidModelError as InvalidModelError
from rgdiff.models.base import AbstractExactScoreModel as AbstractExactScoreModel
from rgdiff.models.base import AbstractScoreModel as AbstractScoreModel
from rgdiff.models.base import AbstractVelocityField as AbstractVelocityField
from rgdiff.models.base import cast_model as cast_model
from rgdiff.models.cnf import ContinuousFlow as ContinuousFlow
from rgdiff.models.convnet import ConvScore as ConvScore
from rgdiff.models.eft import EFTScore as EFTScore
from rgdiff.models.eft import eft_basis as eft_basis
from rgdiff.models.eft import eft_basis_divergence as eft_basis_divergence
from rgdiff.models.gaussian_score import GaussianFlowScore as GaussianFlowScore
from rgdiff.models.embedding import TimeEmbedding as TimeEmbedding
from rgdiff.models.scales import coupling_scale as coupling_scale
from rgdiff.models.scales import phi4_couplings as phi4_couplings
from rgdiff.models.scales import phi4_field_scale as phi4_field_scale
from rgdiff.models.scales import score_scale as score_scale
