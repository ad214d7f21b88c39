"""Checkpoints: the published format loads strictly, ours round-trips, unsafe or broken files are refused."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from LungDDPMLib.checkpoint import (
    FORMAT_OURS,
    FORMAT_PUBLISHED,
    atomic_torch_save,
    load_checkpoint,
    save_checkpoint,
)
from LungDDPMLib.config import preset
from LungDDPMLib.diffusion import DiffusionModel
from LungDDPMLib.errors import CheckpointError, UnsafeCheckpointError

DATA = Path(__file__).resolve().parents[1] / "Data"


def random_published_file(path: Path, seed: int = 0) -> dict:
    """A file with exactly the published keys and shapes (from the reference list) and random values."""
    shapes = json.loads((DATA / "lung_ddpm_state_dict_shapes.json").read_text())["keys"]
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(shape, generator=g) * 0.02 for k, shape in shapes.items()}
    ema = {k: v + 0.001 for k, v in state.items()}
    torch.save({"step": 100000, "model": state, "ema": ema}, path)
    return ema


def test_published_format_file_loads_strictly_and_runs(tmp_path: Path) -> None:
    path = tmp_path / "Lung-DDPM-LIDC-IDRI-100000-steps.pt"
    ema = random_published_file(path)
    ckpt = load_checkpoint(path)
    assert ckpt.format == FORMAT_PUBLISHED and ckpt.config.preset == "lung-ddpm"
    assert ckpt.step == 100000 and ckpt.weights == "ema" and len(ckpt.sha256) == 64
    loaded = ckpt.model.state_dict()
    assert all(torch.equal(loaded[k], ema[k]) for k in ema)  # the schedule buffers too, as stored
    with torch.no_grad():
        x = torch.randn(1, 1, 16, 16, 16)
        cond = ckpt.model.condition(torch.zeros(1, 16, 16, 16, dtype=torch.long))
        out = ckpt.model.eps(x, torch.tensor([10]), cond)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0
    raw = load_checkpoint(path, weights="model").model.state_dict()
    assert not torch.equal(raw["denoise_fn.out.2.weight"], loaded["denoise_fn.out.2.weight"])


def test_our_format_round_trips_config_weights_and_provenance(tmp_path: Path) -> None:
    model = DiffusionModel(preset("tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    ema = DiffusionModel(preset("tiny"))
    path = save_checkpoint(tmp_path / "run" / "m.pt", model, ema=ema, step=7, provenance={"data": "phantom"})
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary left behind
    got = load_checkpoint(path, weights="model")
    assert got.format == FORMAT_OURS and got.config == model.config and got.step == 7
    assert got.provenance == {"data": "phantom"}
    assert all(torch.equal(a, b) for a, b in zip(got.model.state_dict().values(), model.state_dict().values()))
    assert torch.equal(load_checkpoint(path).model.denoise_fn.out[2].weight, ema.denoise_fn.out[2].weight)


def test_only_model_weights_fall_back_from_ema(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", DiffusionModel(preset("tiny")))
    with pytest.warns(RuntimeWarning, match="no EMA weights"):
        assert load_checkpoint(path).weights == "model"


class _RunsCode:
    def __reduce__(self):  # the attack a malicious checkpoint would carry
        return (os.system, ("touch PWNED",))


def test_pickle_that_would_run_code_is_refused_and_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"model": {"denoise_fn.x": _RunsCode()}}, path)
    with pytest.raises(UnsafeCheckpointError, match="would run code"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"model": _RunsCode()}))
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)
    assert not (tmp_path / "PWNED").exists()


def test_protocol_0_code_pickle_is_still_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A text-only pickle (protocol 0) is not a torch file but is still named for what it is: code."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil0.pt"
    path.write_bytes(pickle.dumps({"model": _RunsCode()}, protocol=0))
    with pytest.raises(UnsafeCheckpointError, match="would run code"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "content",
    [b"checkpoint\n", b"model weights v2\n", b'{"step": 3}\n', b"hello\n", b"", b"\x5c\x01\x00\x00" + bytes(344)],
    ids=["checkpoint", "words", "json", "hello", "empty", "nifti-header"],
)
def test_text_or_other_file_is_not_a_checkpoint_not_unsafe(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is not a checkpoint") as info:
        load_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert "notes.pt" in str(info.value)


def test_non_finite_weights_are_refused_naming_the_first_bad_tensor(tmp_path: Path) -> None:
    model = DiffusionModel(preset("tiny"))
    key = next(k for k, v in model.state_dict().items() if v.is_floating_point() and k.startswith("denoise_fn."))
    with torch.no_grad():
        model.state_dict()[key].view(-1)[3] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", model, ema=DiffusionModel(preset("tiny")))
    with pytest.raises(CheckpointError, match=f"model tensor '{key}'"):
        load_checkpoint(tmp_path / "nan.pt", weights="model")
    assert load_checkpoint(tmp_path / "nan.pt").weights == "ema"  # the finite EMA still loads
    with torch.no_grad():
        model.state_dict()[key].view(-1)[3] = 0.0
        model.state_dict()["denoise_fn.out.2.bias"].fill_(float("inf"))
    save_checkpoint(tmp_path / "inf.pt", DiffusionModel(preset("tiny")), ema=model)
    with pytest.raises(CheckpointError, match=r"non-finite weights .* ema tensor 'denoise_fn.out.2.bias'"):
        load_checkpoint(tmp_path / "inf.pt")


def test_corrupt_truncated_missing_and_foreign_files(tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "good.pt", DiffusionModel(preset("tiny")))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match="unrecognised checkpoint"):
        load_checkpoint(foreign)
    listy = tmp_path / "list.pt"
    torch.save([1, 2], listy)
    with pytest.raises(CheckpointError, match="not a checkpoint dictionary"):
        load_checkpoint(listy)


def test_weights_of_another_architecture_name_the_mismatch(tmp_path: Path) -> None:
    small_sd = DiffusionModel(preset("tiny")).state_dict()
    path = tmp_path / "wrong.pt"
    torch.save({"step": 1, "model": small_sd, "ema": small_sd}, path)  # published layout, tiny weights
    with pytest.raises(CheckpointError, match=r"wrong shapes: denoise_fn\.time_embed\.0\.weight"):
        load_checkpoint(path)
    # Our format whose config says one thing and whose weights say another.
    model = DiffusionModel(preset("tiny"))
    payload_path = save_checkpoint(tmp_path / "ours.pt", model)
    payload = torch.load(payload_path, weights_only=True)
    payload["config"] = preset("small").to_json()
    torch.save(payload, payload_path)
    with pytest.raises(CheckpointError, match=r"missing keys|unexpected keys|wrong shapes"):
        load_checkpoint(payload_path)


def test_damaged_config_record(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", DiffusionModel(preset("tiny")))
    payload = torch.load(path, weights_only=True)
    payload["config"] = "{not json"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="damaged configuration"):
        load_checkpoint(path)


def test_failed_save_keeps_previous_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "last.pt"
    atomic_torch_save({"v": torch.tensor([1])}, target)
    before = target.read_bytes()

    def explode(obj, fh, *a, **k):
        fh.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"v": torch.tensor([2])}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_export_keeps_one_copy_of_the_chosen_weights(tmp_path: Path) -> None:
    from LungDDPMLib.checkpoint import export_weights

    model, ema = DiffusionModel(preset("small")), DiffusionModel(preset("small"))
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.5)
    extra = {"trainer": {"optimizer": {"m": [torch.zeros(500_000)]}}}  # stands in for the optimiser state
    source = save_checkpoint(tmp_path / "last.pt", model, ema=ema, step=9, provenance={"run": "x"}, extra=extra)
    target = export_weights(source, tmp_path / "demo.pt")
    weights_bytes = sum(v.numel() * v.element_size() for v in ema.state_dict().values())
    assert target.stat().st_size < 1.1 * weights_bytes < source.stat().st_size
    got = load_checkpoint(target)  # no "no EMA weights" warning: the EMA weights are there
    assert got.weights == "ema" and got.step == 9 and got.provenance["run"] == "x"
    assert got.provenance["exported_from"]["weights"] == "ema"
    assert all(torch.equal(a, b) for a, b in zip(got.model.state_dict().values(), ema.state_dict().values()))
    payload = torch.load(target, weights_only=True)
    assert "trainer" not in payload


def test_saved_checkpoints_get_the_users_file_mode(tmp_path):
    """Atomic saving goes through a private temporary file; the model file itself must be readable like any other."""
    import os
    import stat

    from LungDDPMLib.checkpoint import atomic_torch_save

    old = os.umask(0o022)
    try:
        atomic_torch_save({"x": 1}, tmp_path / "m.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == 0o644


def test_float16_export_halves_the_file_and_loads_back_as_float32(tmp_path: Path) -> None:
    """The bundle's size budget: a half-precision copy is half the bytes, loads into a float32 model, and differs
    from the float32 weights by no more than half precision's rounding; buffers stay as they were."""
    from LungDDPMLib.checkpoint import export_weights

    model = DiffusionModel(preset("small"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    source = save_checkpoint(tmp_path / "last.pt", model, ema=model, step=4)
    full = export_weights(source, tmp_path / "f32.pt")
    half = export_weights(source, tmp_path / "f16.pt", storage="float16")
    assert 0.45 < half.stat().st_size / full.stat().st_size < 0.55
    stored = torch.load(half, weights_only=True)["ema"]
    names = {n for n, _ in model.named_parameters()}
    assert {str(v.dtype) for k, v in stored.items() if k in names} == {"torch.float16"}
    assert all(v.dtype == model.state_dict()[k].dtype for k, v in stored.items() if k not in names)
    got = load_checkpoint(half)
    assert got.provenance["stored_as"] == "float16"
    for (name, a), b in zip(got.model.state_dict().items(), model.state_dict().values()):
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, rtol=2**-11, atol=6e-8)
    assert any(not torch.equal(a, b) for a, b in zip(got.model.parameters(), model.parameters()))


def test_float16_export_refuses_weights_it_would_turn_into_inf(tmp_path: Path) -> None:
    from LungDDPMLib.checkpoint import export_weights

    model = DiffusionModel(preset("small"))
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = 1e5
    source = save_checkpoint(tmp_path / "last.pt", model, ema=model, step=1)
    with pytest.raises(CheckpointError, match=r"beyond torch\.float16 range"):
        export_weights(source, tmp_path / "f16.pt", storage="float16")
    assert not (tmp_path / "f16.pt").exists()
