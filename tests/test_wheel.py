"""A built wheel carries the built-in frameworks and configs and finds them.

Builds the real wheel with pip (hatchling backend), unpacks it, and imports
Pliny from the unpacked tree in a subprocess started outside the repo, so
nothing can fall back on the checkout's top-level frameworks/ or configs/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = [
    "pliny/_data/frameworks/rise.yaml",
    "pliny/_data/frameworks/care.yaml",
    "pliny/_data/configs/default.yaml",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)]
    if importlib.util.find_spec("hatchling") is not None:
        cmd.insert(4, "--no-build-isolation")  # offline when the backend is already here
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("*.whl")
    return built


def test_wheel_ships_frameworks_configs_and_the_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for data in DATA:
            assert data in names
            assert zf.read(data) == (REPO / data.removeprefix("pliny/_data/")).read_bytes()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "pliny = pliny.cli:main" in zf.read(entry_points).decode()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "Requires-Python: >=3.11" in zf.read(metadata).decode()
    assert {"pliny/web/static/index.html", "pliny/web/static/app.js"} <= names  # pliny serve
    assert not [n for n in names if n.startswith(("tests/", "frameworks/", ".venv/"))]


def test_unpacked_wheel_finds_its_builtins(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    probe = (
        "import json, pliny, pliny.config.resources as r\n"
        "from pliny.framework.model import builtin_names, load\n"
        "from pliny.config.settings import load_settings\n"
        "rise, care = load('rise'), load('care')\n"
        "print(json.dumps({'pliny': pliny.__file__, 'frameworks': str(r.frameworks_dir()),\n"
        "  'config': str(r.config_path('default.yaml')), 'names': builtin_names(),\n"
        "  'phases': [p.name for p in rise.phases], 'care': care.name,\n"
        "  'model': load_settings(None).llm.model}))\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert Path(found["pliny"]).is_relative_to(site)
    assert Path(found["frameworks"]) == site / "pliny" / "_data" / "frameworks"
    assert Path(found["config"]) == site / "pliny" / "_data" / "configs" / "default.yaml"
    assert {"rise", "care"} <= set(found["names"])
    assert found["phases"] == ["research", "identify", "synthesize", "execute"]
    assert found["care"] == "care"
    assert found["model"] == "gpt-4o-mini"
    cli = [sys.executable, "-c", "from pliny.cli import main; main()", "frameworks", "list"]
    listed = subprocess.run(cli, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "rise" in listed.stdout and "care" in listed.stdout
