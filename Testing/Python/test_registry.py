"""Which file a run uses: a path as given, a bundled model by name, or the mode's bundled default (the fast
student where it ships, else its teacher). Checked against the files themselves, in a copy of the models folder
where the student is present or absent."""

from __future__ import annotations

from pathlib import Path

import pytest

import LungDDPMLib.registry as registry


@pytest.fixture
def models_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models folder with stand-in files, and the registry pointed at it."""
    folder = tmp_path / "models"
    folder.mkdir()
    files = {key: folder / f"{key}.pt" for key in ("lungddpm-demo", "lungddpm-roi", "lungddpm-roi-fast")}
    for path in files.values():
        path.write_bytes(path.name.encode())
    monkeypatch.setattr(registry, "DEMO_FILE", files["lungddpm-demo"])
    monkeypatch.setattr(registry, "ROI_FILE", files["lungddpm-roi"])
    monkeypatch.setattr(registry, "ROI_FAST_FILE", files["lungddpm-roi-fast"])
    monkeypatch.setattr(registry, "BUNDLED_FILES", files)
    return folder


def test_roi_mode_prefers_the_student_and_falls_back_to_the_teacher(models_folder: Path) -> None:
    assert registry.bundled_model("roi") == models_folder / "lungddpm-roi-fast.pt"
    assert registry.bundled_model(None) == registry.bundled_model("full") == models_folder / "lungddpm-demo.pt"
    (models_folder / "lungddpm-roi-fast.pt").unlink()
    assert registry.bundled_model("roi") == models_folder / "lungddpm-roi.pt"


def test_model_file_takes_paths_names_and_defaults(
    models_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert registry.model_file("", "roi") == registry.model_file(None, "roi") == models_folder / "lungddpm-roi-fast.pt"
    assert registry.model_file("lungddpm-roi", "roi") == models_folder / "lungddpm-roi.pt"  # the teacher, by name
    mine = tmp_path / "mine.pt"
    assert registry.model_file(str(mine), "roi") == mine  # a path is a path, even one that does not exist yet
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lungddpm-roi").write_bytes(b"a user's file")  # a file of that name wins over the bundled model
    assert registry.model_file("lungddpm-roi") == Path("lungddpm-roi")


def test_the_slicer_module_describes_the_file_the_engine_picks(
    models_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Slicer side keeps its own copy of the order (it may not import the registry): with the student present and
    absent, its model line names the file ``bundled_model('roi')`` returns."""
    import conftest_slicer

    conftest_slicer.add_module_path()
    from LungDDPMLogic import model_info

    root = models_folder.parent / "engine"
    (root / "LungDDPMLib").mkdir(parents=True)
    (root / "LungDDPMLib" / "models").symlink_to(models_folder, target_is_directory=True)
    monkeypatch.setattr(model_info, "engine_root", lambda: root)
    for expected in ("lungddpm-roi-fast.pt", "lungddpm-roi.pt"):
        engine = registry.bundled_model("roi")
        assert engine.name == expected
        assert Path(model_info.model_to_describe("", "roi")).resolve() == engine.resolve()
        (models_folder / "lungddpm-roi-fast.pt").unlink(missing_ok=True)  # then only the teacher ships


def test_every_bundled_name_is_a_known_model_with_its_file_name() -> None:
    known = {m.key: m for m in registry.KNOWN_MODELS}
    for key, path in registry.BUNDLED_FILES.items():
        assert key in known and path.name in known[key].file_names
