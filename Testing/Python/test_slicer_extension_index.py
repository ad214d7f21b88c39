"""The extension is ready for Slicer's ExtensionsIndex: the checks its CI runs on a description file, done here.

Mirrors, in our own code, what ``scripts/check_description_files.py`` and the pre-commit hooks of
Slicer/ExtensionsIndex check (read at commit 07f1d1b, 2026-08-07): the entry validates against the catalog entry
schema (v1.0.2: required ``$schema``, ``category``, ``scm_url``; no other properties than the schema's; types and
enums), the category is an accepted one, the scm URL is git/https and names a repository with "slicer" in it, the
top-level CMakeLists.txt's ``project()`` matches the file name and sets http(s) icon and screenshot URLs to images,
a LICENSE sits at the root, and the JSON is formatted as the index's prettier (with
``prettier-plugin-multiline-arrays``, wrap threshold 0) writes it. The URLs cannot be fetched here (no network);
instead each raw URL into this repository must name a PNG that is committed at that path. The repository stays far
below the index's 100 MB limit.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "LungDDPM.json"
CMAKE = ROOT / "CMakeLists.txt"
#: The schema's properties and their JSON types (slicer-extension-catalog-entry-schema-v1.0.2).
SCHEMA_TYPES = {
    "$schema": str,
    "category": str,
    "scm_url": str,
    "scm_revision": str,
    "scm_type": str,
    "build_dependencies": list,
    "dicom_support_rule": str,
    "build_subdirectory": str,
    "enabled": bool,
    "tier": int,
}
SCHEMA_REQUIRED = ("$schema", "category", "scm_url")
#: A few of the index's accepted categories (its list has about 60); ours must be one of them.
ACCEPTED_CATEGORIES = ("Image Synthesis", "Segmentation", "Utilities", "Analysis", "Quantification")
REPO_RAW = "https://raw.githubusercontent.com/lungddpm/SlicerLungDDPM/main/"
PNG = b"\x89PNG\r\n\x1a\n"


def _entry() -> dict:
    return json.loads(ENTRY.read_text())


def _cmake_value(name: str) -> str:
    """A quoted ``set(NAME "...")`` value, matched as loosely as the index's regular expressions match it."""
    m = re.search(rf'set\s*\({name}\s*"([^"]+)"[ ]*\)', CMAKE.read_text(), re.IGNORECASE)
    assert m, f"{name} is not set to a non-empty quoted value in CMakeLists.txt"
    return m.group(1)


def test_slicer_index_entry_validates_against_the_catalog_schema():
    entry = _entry()
    for key in SCHEMA_REQUIRED:
        assert entry.get(key), f"required property {key!r} is missing or empty"
    extra = sorted(set(entry) - set(SCHEMA_TYPES))
    assert not extra, f"additionalProperties is false in the schema: {extra}"
    for key, value in entry.items():
        assert type(value) is SCHEMA_TYPES[key], f"{key!r} must be a {SCHEMA_TYPES[key].__name__}"
    assert all(isinstance(d, str) for d in entry.get("build_dependencies", []))
    assert entry.get("scm_type", "git") in ("git", "local")
    assert 1 <= entry.get("tier", 1) <= 5
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
                        r"slicer-extension-catalog-entry-schema-v1\.0\.\d\.json#?", entry["$schema"])  # fmt: skip


def test_slicer_index_category_scm_url_and_repository_name():
    entry = _entry()
    assert entry["category"] in ACCEPTED_CATEGORIES
    url = urllib.parse.urlsplit(entry["scm_url"])
    assert "://" in entry["scm_url"] and url.scheme in ("git", "https")
    repository = Path(url.path).stem  # ".git" dropped as the index drops it
    assert "slicer" in repository.lower(), repository


def test_slicer_index_cmakelists_matches_and_points_at_committed_images():
    text = CMAKE.read_text()
    project = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", text, re.IGNORECASE)
    assert project and project[0].strip("\"'") == ENTRY.stem  # the index compares it with the JSON's file name
    icon = _cmake_value("EXTENSION_ICONURL")
    screenshots = _cmake_value("EXTENSION_SCREENSHOTURLS").split()
    assert screenshots, "the index needs at least one screenshot URL"
    for url in [icon, *screenshots]:
        assert url.startswith("http") and url.lower().endswith((".png", ".jpg", ".jpeg", ".gif")), url
        assert url.startswith(REPO_RAW), f"{url} is not a raw URL into this repository's main branch"
        path = ROOT / url[len(REPO_RAW) :]
        assert path.is_file() and path.read_bytes()[:8] == PNG, f"{url}: no PNG committed at {path}"
        assert _tracked(path), f"{path} is not committed, so the URL would not resolve"
    icon_png = (ROOT / icon[len(REPO_RAW) :]).read_bytes()
    assert int.from_bytes(icon_png[16:20], "big") == int.from_bytes(icon_png[20:24], "big") == 128  # 128x128
    assert (ROOT / "LICENSE").is_file()
    # the JSON's build dependencies are the CMake extension dependencies (the index asks for consistency)
    depends = _cmake_value("EXTENSION_DEPENDS").split()
    assert sorted(_entry().get("build_dependencies", [])) == sorted(d for d in depends if d != "NA")


def _tracked(path: Path) -> bool:
    done = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=ROOT, capture_output=True)
    return done.returncode == 0


def _prettier_multiline(value, indent: int = 0) -> str:
    """JSON as prettier writes it with prettier-plugin-multiline-arrays at wrap threshold 0: two-space indent, every
    non-empty array and object one element per line, empty ones as [] and {}."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_prettier_multiline(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + _prettier_multiline(v, indent + 1) for v in value) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": []}, '{\n  "a": []\n}'),
        ({"build_dependencies": ["PyTorch"]}, '{\n  "build_dependencies": [\n    "PyTorch"\n  ]\n}'),
    ],
)
def test_slicer_prettier_layout_oracle(value, expected):
    assert _prettier_multiline(value) == expected


def test_slicer_index_entry_is_formatted_as_the_index_wants():
    text = ENTRY.read_text()
    assert text == _prettier_multiline(json.loads(text)) + "\n"
    assert "\t" not in text and "\r" not in text  # forbid-tabs, mixed-line-ending


def test_slicer_repository_is_small_and_documents_the_topic():
    sizes = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    total = sum((ROOT / p.decode()).stat().st_size for p in sizes if p and (ROOT / p.decode()).is_file())
    assert total < 100 * 2**20, f"{total / 2**20:.1f} MB of tracked files; the index rejects repositories over 100 MB"
    assert "`3d-slicer-extension`" in (ROOT / "README.md").read_text()
