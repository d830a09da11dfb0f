"""Machine-readable Debian copyright files (DEP-5): which licence and copyright line apply to a file."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Dep5Paragraph:
    """A ``Files:`` paragraph of a machine-readable Debian copyright file."""

    files: tuple[str, ...]
    license: str
    copyright: str


def parse_dep5(text: str) -> list[Dep5Paragraph]:
    """The ``Files:`` paragraphs of a DEP-5 copyright file (license = the first line of its License field)."""
    out: list[Dep5Paragraph] = []
    for para in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                k, _, v = line.partition(":")
                key = k.strip().lower()
                fields[key] = v.strip()
        if "files" in fields:
            lic = fields.get("license", "").strip().splitlines()
            cop = " ".join(fields.get("copyright", "").split())
            out.append(Dep5Paragraph(tuple(fields["files"].split()), lic[0] if lic else "", cop))
    return out


def _dep5_matches(pattern: str, path: str) -> bool:
    base = path.rsplit("/", 1)[-1]
    if "/" in pattern:  # an upstream source path: match exact file names only (the install path differs)
        pbase = pattern.rsplit("/", 1)[-1]
        return not any(c in pbase for c in "*?[") and pbase == base
    return fnmatch.fnmatchcase(base, pattern) or fnmatch.fnmatchcase(path, pattern)


def dep5_license(paragraphs: Sequence[Dep5Paragraph], path: str, upstream: bool = False) -> Dep5Paragraph | None:
    """The paragraph that applies to ``path`` (the last matching one, as DEP-5 says), or ``None``.

    ``path`` is an installed path, matched loosely (the source tree differs), unless ``upstream``: then it is the
    file's path in the upstream source tree and the patterns match it as DEP-5 defines (``*`` spans ``/``).
    """
    found = None
    for p in paragraphs:
        if upstream:
            hit = any(fnmatch.fnmatchcase(path, pat) for pat in p.files)
        else:
            hit = any(_dep5_matches(pat, path) for pat in p.files)
        if hit:
            found = p
    return found
