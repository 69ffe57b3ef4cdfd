"""A real NVFlare server context (FLContext, Workspace, DXO) for driving the filter outside a job."""

from __future__ import annotations

import os

import numpy as np
import torch
from nvflare.apis.dxo import DXO, DataKind
from nvflare.apis.fl_constant import ReservedKey
from nvflare.apis.fl_context import FLContext, FLContextManager
from nvflare.apis.workspace import Workspace
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType

from gradinv.fl.meta import META_MODEL, META_NUM_IMAGES, META_RECIPE
from gradinv.models import build_model
from gradinv.recipe import TrainingRecipe
from gradinv.simulation import simulate_client

RESOLUTION = 16


class FakeServerEngine:
    def __init__(self, root, job_id="job-1"):
        for folder in ("startup", "local"):
            os.makedirs(os.path.join(root, folder), exist_ok=True)
        self.workspace = Workspace(root_dir=str(root), site_name="server")
        self.fl_ctx_mgr = FLContextManager(engine=self, identity_name="server", job_id=job_id)

    def new_context(self):
        return self.fl_ctx_mgr.new_context()

    def get_workspace(self):
        return self.workspace

    def fire_event(self, event_type, fl_ctx):
        """Warnings and errors are also fired as log events; the real engine dispatches them."""


def global_model(seed: int = 0):
    return build_model("bn_cnn", resolution=RESOLUTION, init_seed=seed)


def send_round(engine, flt, model, round_num=0):
    """What FedAvg does before a round: fire BEFORE_TRAIN_TASK with the task data."""
    weights = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    task = DXO(DataKind.WEIGHTS, data=weights).to_shareable()
    task.set_header(AppConstants.CURRENT_ROUND, round_num)
    ctx = engine.new_context()
    ctx.set_prop(AppConstants.TRAIN_SHAREABLE, task, private=True, sticky=False)
    flt.handle_event(AppEventType.BEFORE_TRAIN_TASK, ctx)
    return weights


def client_result(model, images, labels, recipe=TrainingRecipe(), round_num=0, kind=DataKind.WEIGHT_DIFF, meta=True):
    """A real client update (:func:`gradinv.simulation.simulate_client`) as a result shareable (state-dict diff,
    or the trained weights for ``kind=WEIGHTS``, + gradinv meta)."""
    update = simulate_client(model, images, labels, recipe, round_num=round_num)
    if kind == DataKind.WEIGHTS:
        data = {k: (update.global_state[k] + update.diff[k]).numpy().copy() for k in update.diff}
    else:
        data = {k: update.diff[k].double().numpy() for k in update.diff}
    dxo_meta = {}
    if meta:
        dxo_meta = {"NUM_STEPS_CURRENT_ROUND": recipe.num_steps(len(images)), META_RECIPE: recipe.to_meta(),
                    META_NUM_IMAGES: len(images), META_MODEL: {"name": "bn_cnn"}}
    result = DXO(kind, data=data, meta=dxo_meta).to_shareable()
    result.add_cookie(AppConstants.CONTRIBUTION_ROUND, round_num)
    return result


def result_context(engine, site="site-1"):
    ctx = engine.new_context()
    peer = FLContext()
    peer.set_prop(ReservedKey.IDENTITY_NAME, site, private=False, sticky=False)
    ctx.set_peer_context(peer)
    return ctx


def sample_images(count: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, RESOLUTION, RESOLUTION, generator=generator)
    labels = torch.tensor([i % 2 for i in range(count)])
    return images, labels


def data_of(shareable):
    from nvflare.apis.dxo import from_shareable

    return from_shareable(shareable).data


def arrays_equal(a, b) -> bool:
    return set(a) == set(b) and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k]), equal_nan=True) for k in a)
