"""The filter with NVFlare's tensor disk offload (``FedAvgRecipe(enable_tensor_disk_offload=True)``): the client's
tensors arrive as lazy references to safetensors files; each is read once per attacked update and passed on as is."""

from __future__ import annotations

import csv

import pytest
import torch
from nvflare.apis.dxo import DXO, from_shareable
from nvflare.apis.event_type import EventType
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_opt.pt.lazy_tensor_dict import _LazyRef, _TempDirRef
from safetensors.torch import save_file

from .fl_helpers import FakeServerEngine, client_result, global_model, result_context, sample_images, send_round
from .test_filter import make_filter


class _CountingRef(_LazyRef):
    reads: dict[str, int] = {}

    def materialize(self):
        _CountingRef.reads[self.key] = _CountingRef.reads.get(self.key, 0) + 1
        return super().materialize()


def _offloaded(result, folder):
    """``result`` as the server receives it with disk offload on: every tensor a lazy reference to a file."""
    dxo = from_shareable(result)
    tensors = {name.replace(".", "_"): torch.from_numpy(value).contiguous() for name, value in dxo.data.items()}
    folder.mkdir()
    save_file(tensors, str(folder / "tensors.safetensors"))
    temp_ref = _TempDirRef(str(folder))
    refs = {name: _CountingRef(str(folder / "tensors.safetensors"), name.replace(".", "_"), temp_ref)
            for name in dxo.data}
    offloaded = DXO(dxo.data_kind, data=refs, meta=dxo.meta).to_shareable()
    offloaded.add_cookie(AppConstants.CONTRIBUTION_ROUND, result.get_cookie(AppConstants.CONTRIBUTION_ROUND))
    return offloaded, refs


@pytest.mark.parametrize("mode", ["gate", "audit"])
def test_offloaded_tensors_are_attacked_read_once_and_passed_on_unchanged(tmp_path, mode):
    engine = FakeServerEngine(tmp_path)
    model = global_model()
    flt = make_filter(mode=mode, audit_max_pending=1)
    send_round(engine, flt, model)
    _CountingRef.reads = {}
    results = [_offloaded(client_result(model, *sample_images(2, seed=n)), tmp_path / f"offload-{n}") for n in (1, 2)]
    for number, (result, refs) in enumerate(results):
        out = flt.process(result, result_context(engine, f"site-{number + 1}"))
        assert all(from_shareable(out).data[name] is ref for name, ref in refs.items())  # the references, as sent
    flt.handle_event(EventType.END_RUN, engine.new_context())
    with open(tmp_path / "job-1" / "gradinv" / "metrics.csv") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["ok", "ok"]
    assert set(_CountingRef.reads.values()) == {2}  # one read per update (two updates share the key names)
