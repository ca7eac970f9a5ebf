"""The CNF flow model (issue 5) as the benchmarks use it, or a clear note why it is not available.

The flow is built in parallel with the benchmarks; everything the benchmarks need from it is
looked up here once, so a missing or changed API skips the flow rows with a note instead of
failing the whole run.
"""

from __future__ import annotations

import inspect

NOT_AVAILABLE = "flow model not available"


def flow_api():
    """(api dict, None) or (None, note): ContinuousFlow, reverse_kl_loss, and the sampler `sample`."""
    try:
        from rgdiff.objectives.cnf import reverse_kl_loss
        from rgdiff.generate.transport import sample
        from rgdiff.models.cnf import ContinuousFlow
    except Exception as err:  # noqa: BLE001 - any import failure of a module under construction
        return None, f"{NOT_AVAILABLE} ({type(err).__name__}: {err})"
    needed = {
        ContinuousFlow: ("lattice", "horizon", "key"),
        reverse_kl_loss: ("flow", "scheme", "theory", "key", "batch", "steps"),
        sample: ("flow", "scheme", "key", "n", "steps"),
    }
    for fn, names in needed.items():
        params = inspect.signature(fn).parameters
        missing = [n for n in names if n not in params]
        if missing:
            return None, f"{NOT_AVAILABLE} ({fn.__name__} lacks {', '.join(missing)})"
    return {"ContinuousFlow": ContinuousFlow, "reverse_kl_loss": reverse_kl_loss, "sample": sample}, None
