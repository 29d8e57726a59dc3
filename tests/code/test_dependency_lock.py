"""The hashed locks say what requirements.txt says (`make lock` regenerates them from it), every
install uses them with --require-hashes, and the venv holds exactly the locked versions."""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.version import Version

from model.config import ROOT

LOCK = ROOT / "requirements.lock"
IMAGE_LOCKS = {
    "TRAIN": ROOT / "docker" / "train.lock",
    "OFFLINE": ROOT / "docker" / "offline.lock",
    "SERVE": ROOT / "docker" / "serve.lock",
}
LOCK_SCRIPT = (ROOT / "docker" / "lock.sh").read_text()


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Locked:
    version: str
    hashes: set[str] = field(default_factory=set)
    via: list[str] = field(default_factory=list)


def read_lock(path: Path) -> dict[str, Locked]:
    """pip's requirements format as uv writes it: `name==version \\`, `--hash=sha256:...` lines, `# via` lines."""
    locked: dict[str, Locked] = {}
    current = None
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9][\w.-]*)(?:\[[^]]*\])?==(\S+)", line):
            current = locked.setdefault(normalized(match[1]), Locked(match[2]))
        elif current and (digest := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            current.hashes.add(digest[1])
        elif current and (via := re.match(r"^\s+#\s+(?:via\s+)?(\S.*)$", line)) and via[1] != "via":
            current.via.append(via[1].strip())
    return locked


def pins() -> dict[str, str]:
    return {
        normalized(name): version
        for name, version in re.findall(
            r"^([A-Za-z0-9][\w.-]*)(?:\[[^]]*\])?==(\S+)", (ROOT / "requirements.txt").read_text(), re.M
        )
    }


def same_release(locked: str, pinned: str) -> bool:
    """torch==2.13.0 is locked as the CPU build, 2.13.0+cpu: the same release."""
    return Version(locked).public == Version(pinned).public and Version(locked).epoch == Version(pinned).epoch


def image_names(group: str) -> list[str]:
    return LOCK_SCRIPT.split(f'\n{group}="', 1)[1].split('"', 1)[0].split()


def test_the_lock_pins_exactly_what_requirements_txt_pins():
    locked, pinned = read_lock(LOCK), pins()
    missing = sorted(set(pinned) - set(locked))
    assert not missing, f"pinned but not locked: {missing} (run `make lock`)"
    changed = {
        name: (locked[name].version, version)
        for name, version in pinned.items()
        if not same_release(locked[name].version, version)
    }
    assert not changed, f"locked at another version than requirements.txt: {changed} (run `make lock`)"
    direct = {name for name, entry in locked.items() if "-r requirements.txt" in entry.via}
    assert direct == set(pinned), f"locked as direct but no longer pinned: {sorted(direct - set(pinned))} (make lock)"


@pytest.mark.parametrize("path", [LOCK, *IMAGE_LOCKS.values()], ids=lambda path: path.name)
def test_every_locked_package_has_its_files_hashes(path):
    locked = read_lock(path)
    assert locked
    assert not [name for name, entry in locked.items() if not entry.hashes]


@pytest.mark.parametrize("group", sorted(IMAGE_LOCKS))
def test_each_image_lock_holds_its_packages_at_the_pinned_versions(group):
    locked, pinned = read_lock(IMAGE_LOCKS[group]), pins()
    for name in map(normalized, image_names(group)):
        assert name in locked, f"{name} is not in {IMAGE_LOCKS[group].name} (run `make lock`)"
        assert same_release(locked[name].version, pinned[name]), (name, locked[name].version, pinned[name])


@pytest.mark.parametrize("group", ["TRAIN", "OFFLINE"])
def test_the_python_311_image_locks_are_the_venvs_versions_and_files(group):
    """The images train and score with the very packages the venv trains with."""
    venv = read_lock(LOCK)
    for name, entry in read_lock(IMAGE_LOCKS[group]).items():
        assert name in venv, name
        assert (entry.version, entry.hashes) == (venv[name].version, venv[name].hashes), name


def test_the_venv_holds_the_locked_versions():
    """pip aside: `python -m venv` brings its own, which setup's install replaces with the locked
    one (pip-audit needs it), so a venv made before pip was locked still runs the older one."""
    installed = {normalized(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()}
    differ = {
        name: (entry.version, installed.get(name))
        for name, entry in read_lock(LOCK).items()
        if installed.get(name) != entry.version and name != "pip"
    }
    assert not differ, f"the venv differs from requirements.lock (make setup installs it): {differ}"


def test_setup_installs_the_lock_with_hashes_required():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(INSTALLED\): requirements\.lock$", makefile, re.M)
    (install,) = [line for line in makefile.splitlines() if "pip install" in line and "$(PYTHON)" in line]
    assert "--require-hashes" in install and install.rstrip().endswith("-r requirements.lock")
    assert re.search(r"^lock: .*\n\t.*docker/lock\.sh", makefile, re.M)
