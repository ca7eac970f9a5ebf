"""Score models s_theta(phi, t) ~ grad log p_t(phi) for renormalizing diffusion models [5.23].

- `EFTScore` ("eft-score"): the EFT-structured score [5.26] with learned running couplings and
  an exact divergence.
- `ConvScore` ("score"): a generic equivariant periodic conv net.

Both act on one configuration (`jax.vmap` for batches), are scaled for a theory by
`from_theory` / `make_model`, and round-trip through `describe()` and `build_model`.
"""

from ._build import MODEL_CLASSES as MODEL_CLASSES
from ._build import FLOW_NAMES as FLOW_NAMES
from ._build import MODEL_NAMES as MODEL_NAMES
from ._build import build_model as build_model
from ._build import make_model as make_model
from ._errors import InvalidModelError as InvalidModelError
from .base import AbstractScoreModel as AbstractScoreModel
from .cnf import ContinuousFlow as ContinuousFlow
from .convnet import ConvScore as ConvScore
from .eft import EFTScore as EFTScore
from .embedding import TimeEmbedding as TimeEmbedding
from .scales import coupling_scale as coupling_scale
from .scales import phi4_couplings as phi4_couplings
from .scales import phi4_field_scale as phi4_field_scale
from .scales import score_scale as score_scale
