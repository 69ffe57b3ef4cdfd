"""breaching's optimisation-based attack (Geiping et al., PyPI ``breaching`` 0.1.2), driven through its API.

Its attack code runs unmodified; this module only translates a gradinv client update into breaching's
``server_payload`` / ``shared_data`` and chooses its configuration:

* ``invertinggradients`` (cosine-similarity objective, signed Adam, TV prior) against a FedAvg ``local_update``
  user: the closest match to a client that sends ``local - global`` after several SGD steps;
* no BN buffers (``provide_buffers=False``): its replay then runs the model in train mode, which is exact for a
  train-mode BatchNorm client; with buffers breaching switches its model to eval mode, which mis-models that
  client (the true images score a cosine distance of 0.63-0.70 under its own objective);
* per-step labels given (``provide_local_hyperparams``): its local-update objective needs them, and its label
  recovery reads the sign of ``-lr * gradient`` the wrong way round;
* for a grayscale model its TV term (written for 3 channels) sees the image repeated on 3 channels: the mean over
  identical channels is the 1-channel TV, computed identically.

Needs the ``peers`` extra (``pip install -e .[peers]``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import time
import types
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from gradinv.errors import AttackInputError, GradinvError
from gradinv.peers.common import PeerResult

ATTACK = "invertinggradients"


def import_breaching():
    """breaching, imported after gradinv's torchvision shim; a clear error when the extra is not installed."""
    from gradinv import compat

    compat.import_torchvision()
    compat.import_lpips()
    try:
        import breaching
    except ImportError as exc:
        raise GradinvError("breaching is not installed; install the peers extra: "
                           "GRADINV_EXTRAS=peers bash scripts/bootstrap.sh") from exc
    logging.getLogger("breaching").setLevel(logging.WARNING)
    return breaching


def _grayscale_tv(regularizer: nn.Module) -> None:
    """Feed breaching's 3-channel TV the image repeated on 3 channels (same value as a 1-channel TV)."""
    forward = regularizer.forward
    regularizer.forward = lambda tensor, *args, **kwargs: forward(  # type: ignore[method-assign]
        tensor.expand(-1, 3, -1, -1) if tensor.shape[1] == 1 else tensor, *args, **kwargs)


def attack_breaching(model: nn.Module, global_state: Mapping[str, torch.Tensor], diff: Mapping[str, torch.Tensor],
                     num_images: int, step_labels: Sequence[torch.Tensor], labels: torch.Tensor, lr: float,
                     iterations: int, input_shape: tuple[int, int, int], seed: int = 0) -> PeerResult:
    """Reconstruct a local-update client's images with breaching's ``invertinggradients`` attack.

    Args:
        model: an instance of the client's architecture (the global state is loaded into breaching's copy).
        global_state, diff: the round's global state dict and the client's ``local - global`` diff.
        num_images: N, the client's images.
        step_labels: the labels of every local step, in order (breaching's local-update replay needs them).
        labels: the N images' labels (given, so that breaching's label recovery is not used).
        lr: the client's SGD learning rate (breaching replays plain SGD, one slice of images per step).
        iterations: breaching's optimiser iterations.
        input_shape: (C, H, W) of one image.
        seed: seeds breaching's random start (through torch's global RNG, restored afterwards).
    """
    breaching = import_breaching()
    # breaching prints its configuration, and hydra warns that breaching names no version_base.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*version_base.*", category=UserWarning)
        cfg = breaching.get_attack_config(ATTACK, [f"optim.max_iterations={iterations}",
                                                   f"optim.callback={max(iterations, 1)}"])
    setup = {"device": torch.device("cpu"), "dtype": torch.float}
    attacker_model = copy.deepcopy(model)
    attacker_model.load_state_dict(global_state)
    attacker = breaching.attacks.prepare_attack(attacker_model, nn.CrossEntropyLoss(), cfg, setup)
    for regularizer in attacker.regularizers:
        if type(regularizer).__name__ == "TotalVariation":
            _grayscale_tv(regularizer)
    names = [name for name, _ in attacker_model.named_parameters()]
    sizes = {int(step.numel()) for step in step_labels}
    if len(sizes) != 1:
        raise AttackInputError("breaching replays equal-size local steps only; use a batch size that divides N")
    metadata = types.SimpleNamespace(shape=tuple(input_shape), modality="vision")
    server_payload = [{"parameters": [global_state[name] for name in names], "buffers": None, "metadata": metadata}]
    shared_data = [{
        "gradients": [diff[name] for name in names],
        "buffers": None,
        "metadata": {"num_data_points": num_images,
                     "labels": labels.sort()[0],
                     "local_hyperparams": {"lr": lr, "steps": len(step_labels), "data_per_step": sizes.pop(),
                                           "labels": [step.sort()[0] for step in step_labels]},
                     "data_key": "inputs"},
    }]
    started = time.monotonic()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reconstruction, _stats = attacker.reconstruct(server_payload, shared_data, {}, dryrun=False)
    seconds = time.monotonic() - started
    return PeerResult(reconstruction["data"].detach().clamp(0, 1), iterations, seconds)
