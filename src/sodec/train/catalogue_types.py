"""The data types of the ``sodec data`` catalogue: a curated :class:`Photo`, an :class:`Excluded` candidate and a
:class:`Source` (a group of packages and the photos chosen from them).  Shared by :mod:`sodec.train.catalogue` (the
original six sources and the registry) and :mod:`sodec.train.catalogue_more` (the train-only sources added for nano
v3); nothing here downloads or writes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

#: excluded by file name from every source, folders included
EXCLUDED_NAMES: dict[str, str] = {
    "seeding_by_clements_engelhardt.jpg": "the bundled demo photo (src/sodec/assets/dandelions.png) is made from it",
    "dandelions.png": "the bundled demo photo (src/sodec/assets/dandelions.png)",
}

Kind = Literal["deb", "wheel", "folder"]


@dataclass(frozen=True)
class Photo:
    """One curated photograph: where it is inside its package and what the package says about it.

    ``license``/``license_file``/``credit`` are set here only where the statement cannot be read from a
    machine-readable file at build time (wheels: the docstrings and READMEs quoted in the comments).
    """

    package: str
    path: str
    stem: str
    license: str | None = None
    license_file: str | None = None
    credit: str | None = None


@dataclass(frozen=True)
class Excluded:
    """A candidate file inside a package that is deliberately not used."""

    package: str
    path: str
    reason: str


@dataclass(frozen=True)
class Source:
    """A named group of photos from one or more packages of the same kind.

    ``packages`` maps a package (Debian package or PyPI distribution) to its pinned version (``None``: the
    version apt offers, recorded in the manifest).  ``copyright_files`` maps a Debian package to its
    machine-readable copyright file.  A ``folder`` source reads every image of a local directory (``root``).
    ``holdout``: whether the split may draw the source's photos into ``val/`` and ``dev/``; ``False`` (a
    *train-only* source) puts every photo in ``train/`` and leaves the split of the other sources exactly as it
    was, so adding such a source never moves a validation or dev photo (docs/data.md).  ``extra_files`` (only for
    a single-package source) are kept in the cache beside the photos, e.g. per-file licence statements; a path
    ``ARCHIVE.rcc:/member`` names a file inside a Qt resource archive of the package (:mod:`sodec.train.qtrcc`).
    """

    name: str
    kind: Kind
    packages: Mapping[str, str | None]
    photos: tuple[Photo, ...] = ()
    excluded: tuple[Excluded, ...] = ()
    copyright_files: Mapping[str, str] = field(default_factory=dict)
    root: Path | None = None
    extra_files: tuple[str, ...] = ()
    describe: Callable[[Path, Photo], dict[str, str | None]] | None = None
    holdout: bool = True
    #: package -> (installed folder, the same folder's path in the upstream source tree), so the DEP-5 patterns of
    #: the copyright file (upstream paths such as ``original-files/*``) can be matched exactly
    upstream_dirs: Mapping[str, tuple[str, str]] = field(default_factory=dict)
