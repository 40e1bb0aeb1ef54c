"""Installed distributions: the one reader of ``*.dist-info`` folders (name and version)."""

from __future__ import annotations

from pathlib import Path


def python_dists(prefix: Path, py_xy: str) -> dict[str, str]:
    """{canonical name: version} of the *.dist-info folders in site-packages."""
    from packaging.utils import canonicalize_name

    sp = Path(prefix) / "lib" / f"python{py_xy}" / "site-packages"
    out: dict[str, str] = {}
    for d in sorted(sp.glob("*.dist-info")) if sp.is_dir() else []:
        name, version = dist_name(d)
        if name:
            out[canonicalize_name(name)] = version
    return out


def dist_name(d: Path) -> tuple[str, str]:
    meta = d / "METADATA"
    name = version = ""
    try:
        with open(meta, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
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


