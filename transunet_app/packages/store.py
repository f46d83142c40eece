"""The local model store: ``$TRANSUNET_HOME`` (default ``~/.transunet/models``).

Layout: ``<home>/<name>/<version>/{model.json, weights.safetensors}``. Nothing is ever
downloaded: a model is installed from a package file. An install unpacks into a temporary
folder inside the store, verifies what landed on disk (:func:`.verify.read_package`), then
renames it into place, so a failed or interrupted install leaves nothing behind. The same name
and version twice is refused without ``force``.

A model is named ``NAME`` (its highest installed version) or ``NAME@VERSION``.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from ..data.files import atomic_folder
from .card import CARD_NAME, PackageError
from .verify import Package, read_package


def models_home() -> Path:
    """``$TRANSUNET_HOME`` or ``~/.transunet/models``."""
    env = os.environ.get("TRANSUNET_HOME")
    return Path(env).expanduser() if env else Path.home() / ".transunet" / "models"


def _version_key(v: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"[.\-_+]", v)]


def installed() -> list[tuple[str, str, Path]]:
    """``(name, version, folder)`` of every installed model, sorted."""
    home = models_home()
    out = []
    if not home.is_dir():
        return out
    for name_dir in sorted(p for p in home.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [p for p in name_dir.iterdir() if p.is_dir() and (p / CARD_NAME).is_file()
                    and not p.name.startswith(".")]
        for v in sorted(versions, key=lambda p: _version_key(p.name)):
            out.append((name_dir.name, v.name, v))
    return out


def find_installed(spec: str) -> Path | None:
    """Folder of ``NAME`` (highest version) or ``NAME@VERSION``; None if not installed."""
    name, _, version = spec.partition("@")
    matches = [(v, p) for n, v, p in installed() if n == name and (not version or v == version)]
    return matches[-1][1] if matches else None


def install(package_path, force: bool = False) -> Package:
    """Install a package file; returns the installed package (read back from the store).

    Raises:
        PackageError: a refused package (nothing installed), or the same name and version
            installed already (without ``force``).
    """
    pkg = read_package(package_path)
    if Path(package_path).is_dir():
        raise PackageError(f"{package_path}: install takes a package file (.zip)")
    name, version = pkg.card["name"], pkg.card["version"]
    home = models_home()
    dest = home / name / version
    if dest.exists() and not force:
        raise PackageError(f"{package_path}: {name} {version} is already installed in {home} "
                           f"(use --force to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)

    def build(tmp: Path) -> None:
        for member, data in pkg.members.items():
            target = tmp / member
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        read_package(tmp)  # what is on disk is what was verified

    atomic_folder(dest, build)
    return read_package(dest)


def remove(spec: str) -> list[Path]:
    """Remove ``NAME`` (every version) or ``NAME@VERSION``; returns the folders removed."""
    name, _, version = spec.partition("@")
    targets = [p for n, v, p in installed() if n == name and (not version or v == version)]
    if not targets:
        raise PackageError(f"{spec}: not installed in {models_home()}{_installed_hint()}")
    for p in targets:
        trash = Path(tempfile.mkdtemp(prefix=".remove-", dir=p.parent))
        os.replace(p, trash / "v")  # one rename: the model disappears at once
        shutil.rmtree(trash, ignore_errors=True)
    parent = models_home() / name
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
    return targets


def _installed_hint() -> str:
    names = sorted({f"{n}@{v}" for n, v, _ in installed()})
    return f" (installed: {', '.join(names)})" if names else " (no models installed)"


def resolve_model(spec) -> Package:
    """A package file, an installed folder, or an installed ``NAME[@VERSION]``, verified.

    Raises:
        PackageError: nothing by that name, or a refused package.
    """
    p = Path(str(spec)).expanduser()
    if p.is_file() or (p.is_dir() and (p / CARD_NAME).is_file()):
        return read_package(p)
    if str(spec).lower().endswith(".zip"):
        raise PackageError(f"{spec}: no such model package file")
    folder = find_installed(str(spec))
    if folder is None:
        raise PackageError(f"{spec}: no installed model of that name in {models_home()} and no "
                           f"such package file{_installed_hint()}")
    return read_package(folder)
