"""The job's own global model, as the server's persistor holds it: the architecture the clients train.

``FedAvgRecipe(model=...)`` (and ``PTModel`` in a ``FedJob``) put the model into the server's model persistor; an
exported job carries it as ``{"path": ..., "args": ...}``, which the persistor instantiates at ``START_RUN``. The
filter only takes the architecture from there: the round's weights are captured from the task it sends.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from gradinv.errors import GradinvError
from gradinv.models.spec import build_from_spec

DEFAULT_PERSISTOR_ID = "persistor"


def job_model(engine: Any) -> nn.Module:
    """A private copy of the ``nn.Module`` the job's model persistor holds.

    Raises:
        GradinvError: when the job has no persistor holding a torch model (then configure the filter's ``model``).
    """
    components = getattr(getattr(engine, "run_manager", None), "components", None) or {}
    # The controllers name their persistor; the recipes call it "persistor".
    persistor_ids = [getattr(component, "_persistor_id", None) for component in components.values()]
    persistor_ids = [pid for pid in persistor_ids if isinstance(pid, str) and pid] + [DEFAULT_PERSISTOR_ID]
    persistors = [engine.get_component(pid) for pid in dict.fromkeys(persistor_ids)]
    persistors += [component for component in components.values() if hasattr(component, "model")]
    for persistor in persistors:
        model = getattr(persistor, "model", None)
        if isinstance(model, str):  # a persistor may name a model component by id
            model = engine.get_component(model)
        if isinstance(model, nn.Module):
            return copy.deepcopy(model).cpu()
        if isinstance(model, dict):  # not instantiated yet by the persistor
            return build_from_spec(model)
    raise GradinvError("the job has no model persistor holding a torch model (FedAvgRecipe(model=...) makes one); "
                       "give the filter the architecture instead: model='pkg.module.Class' or a registry name")
