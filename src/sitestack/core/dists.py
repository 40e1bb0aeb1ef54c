"""Installed distributions: the one reader of ``*.dist-info`` folders (name and version)."""

from __future__ import annotations

from pathlib import Path


def site_dists(site_packages: Path) -> dict[str, tuple[str, str]]:
    """{canonical name: (name as written, version)} of the *.dist-info in one folder.

    Entries without a version (a METADATA that lost it, a folder named without one) are left
    out: nothing can pin or compare them.
    """
    from packaging.utils import canonicalize_name

    out: dict[str, tuple[str, str]] = {}
    for d in sorted(Path(site_packages).glob("*.dist-info")) if Path(site_packages).is_dir() else []:
        name, version = dist_name(d)
        if name and version:
            out[str(canonicalize_name(name))] = (name, version)
    return out


def python_dists(prefix: Path, py_xy: str) -> dict[str, str]:
    """{canonical name: version} of the *.dist-info folders in a prefix's site-packages."""
    sp = Path(prefix) / "lib" / f"python{py_xy}" / "site-packages"
    return {k: v for k, (_name, v) in site_dists(sp).items()}


def dist_name(d: Path) -> tuple[str, str]:
    """(Name, Version) from METADATA's headers, else from the folder's NAME-VERSION name."""
    meta = d / "METADATA"
    name = version = ""
    try:
        with open(meta, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the headers end at the first blank line; the body may be long
                k, _, v = line.partition(":")
                if k.lower() == "name":
                    name = v.strip()
                elif k.lower() == "version":
                    version = v.strip()
    except OSError:
        pass
    if not name:  # fall back on the folder name: NAME-VERSION.dist-info
        stem = d.name.removesuffix(".dist-info")
        name, _, version = stem.partition("-")
    return name, version
