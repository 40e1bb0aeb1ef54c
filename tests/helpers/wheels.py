"""Build tiny, real, pure-Python wheels (py3-none-any) without any build backend.

A wheel is a zip with the package files and ``NAME-VERSION.dist-info/`` holding METADATA
(Metadata-Version 2.1), WHEEL, entry_points.txt, top_level.txt and RECORD (sha256, urlsafe
base64 without padding, and size of every file; RECORD itself has empty hash and size).
They install offline with ``pip install --no-index --find-links DIR`` and with
``uv pip install --no-index --find-links DIR``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same inputs give the same bytes


def normalize(name: str) -> str:
    """PEP 503 normalized project name (``Foo_Bar.baz`` -> ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _escape(name: str) -> str:
    """The name as it appears in wheel file names and the .dist-info folder."""
    return normalize(name).replace("-", "_")


def _module_files(modules: Mapping[str, str]) -> dict[str, str]:
    """Dotted module names -> files. A name that prefixes another one is a package
    (``a/__init__.py``); missing intermediate packages get an empty ``__init__.py``."""
    names = set(modules)
    files: dict[str, str] = {}
    for dotted, source in modules.items():
        parts = dotted.split(".")
        for i in range(1, len(parts)):
            pkg_init = "/".join(parts[:i]) + "/__init__.py"
            if ".".join(parts[:i]) not in names:
                files.setdefault(pkg_init, "")
        is_pkg = any(other.startswith(dotted + ".") for other in names)
        path = "/".join(parts) + ("/__init__.py" if is_pkg else ".py")
        files[path] = source
    return files


def _default_module(import_name: str, name: str, version: str) -> dict[str, str]:
    return {
        f"{import_name}/__init__.py": (
            f'__version__ = "{version}"\n\n\n'
            "def main() -> int:\n"
            f'    print("{name} {version}")\n'
            "    return 0\n"
        )
    }


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def make_wheel(
    dest_dir: str | Path,
    name: str,
    version: str,
    *,
    requires: Iterable[str] = (),
    modules: Mapping[str, str] | None = None,
    console_scripts: Mapping[str, str] | None = None,
    files: Mapping[str, str | bytes] | None = None,
    extra_metadata: Mapping[str, str | Iterable[str]] | None = None,
    record_rows: Iterable[str] = (),
) -> Path:
    """Write ``NAME-VERSION-py3-none-any.whl`` into *dest_dir* and return its path.

    - *requires*: Requires-Dist lines, e.g. ``["shadowme>=2", "foo; python_version>'3'"]``.
    - *modules*: dotted module name -> source (``{"pkg": "...", "pkg.cli": "..."}`` gives
      ``pkg/__init__.py`` and ``pkg/cli.py``). Default: a package named after the project
      (``-``/``.`` -> ``_``) whose ``__init__.py`` has ``__version__ = "VERSION"`` and a
      ``main()`` printing ``"NAME VERSION"`` (so ``{"tool": "NAME:main"}`` works as a script).
    - *console_scripts*: script name -> ``"module:function"``.
    - *files*: archive path -> content, added last (it overrides a generated file with the
      same path, e.g. ``{"name/__init__.py": ...}`` replaces the default module).
    - *extra_metadata*: more METADATA headers, e.g. ``{"Requires-Python": ">=3.8"}``; an
      iterable value gives one header line per item.
    - *record_rows*: more RECORD rows naming files the wheel does not hold (a hostile wheel:
      ``"../../../../tmp/x.txt"``); installers keep them in the installed RECORD.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    escaped = _escape(name)
    import_name = escaped
    dist_info = f"{escaped}-{version}.dist-info"

    payload: dict[str, bytes] = {}
    sources = _module_files(modules) if modules is not None else _default_module(
        import_name, name, version
    )
    for path, text in sources.items():
        payload[path] = text.encode("utf-8")
    for path, content in (files or {}).items():
        payload[path.lstrip("/")] = content.encode("utf-8") if isinstance(content, str) else content
    for path in payload:
        if path.startswith(f"{dist_info}/") or ".." in path.split("/"):
            raise ValueError(f"bad file path in wheel: {path!r}")

    meta = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {name}, a tiny test package",
    ]
    for key, value in (extra_metadata or {}).items():
        values = [value] if isinstance(value, str) else list(value)
        meta += [f"{key}: {v}" for v in values]
    meta += [f"Requires-Dist: {r}" for r in requires]
    wheel_txt = (
        "Wheel-Version: 1.0\n"
        "Generator: sitestack-tests (tests/helpers/wheels.py)\n"
        "Root-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    )
    entry_points = ""
    if console_scripts:
        entry_points = "[console_scripts]\n" + "".join(
            f"{script} = {target}\n" for script, target in console_scripts.items()
        )
    top_level = sorted(
        {p.split("/", 1)[0].removesuffix(".py") for p in payload if p.endswith(".py")}
    )

    payload[f"{dist_info}/METADATA"] = ("\n".join(meta) + "\n").encode("utf-8")
    payload[f"{dist_info}/WHEEL"] = wheel_txt.encode("ascii")
    payload[f"{dist_info}/entry_points.txt"] = entry_points.encode("utf-8")
    payload[f"{dist_info}/top_level.txt"] = "".join(f"{t}\n" for t in top_level).encode("utf-8")

    record_path = f"{dist_info}/RECORD"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for path, data in payload.items():
        writer.writerow([path, _record_hash(data), len(data)])
    for row in record_rows:
        writer.writerow([row, "", ""])
    writer.writerow([record_path, "", ""])
    payload[record_path] = buf.getvalue().encode("utf-8")

    whl = dest / f"{escaped}-{version}-py3-none-any.whl"
    tmp = whl.with_name(whl.name + ".part")
    # Package files first, .dist-info last (as the wheel spec recommends).
    order = sorted(payload, key=lambda p: (p.startswith(f"{dist_info}/"), p == record_path, p))
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in order:
            info = zipfile.ZipInfo(path, date_time=_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, payload[path])
    tmp.replace(whl)
    return whl


WheelSpec = str | tuple[str, str] | tuple[str, str, Iterable[str]] | Mapping[str, Any]


def make_wheelhouse(dest: str | Path, specs: Iterable[WheelSpec]) -> list[Path]:
    """Build several wheels into *dest* (a find-links folder) and return their paths.

    Each spec is ``"name==version"``, ``(name, version)``, ``(name, version, requires)`` or a
    mapping of :func:`make_wheel` keyword arguments (with ``name`` and ``version``).
    """
    out: list[Path] = []
    for spec in specs:
        if isinstance(spec, str):
            name, sep, version = spec.partition("==")
            if not sep or not name.strip() or not version.strip():
                raise ValueError(f"wheel spec {spec!r} is not NAME==VERSION")
            out.append(make_wheel(dest, name.strip(), version.strip()))
        elif isinstance(spec, tuple):
            if len(spec) == 2:
                out.append(make_wheel(dest, spec[0], spec[1]))
            else:
                out.append(make_wheel(dest, spec[0], spec[1], requires=tuple(spec[2])))
        else:
            kw = dict(spec)
            out.append(make_wheel(dest, str(kw.pop("name")), str(kw.pop("version")), **kw))
    return out


def make_sdist(dest: str | Path, name: str, version: str, files: Mapping[str, str]) -> Path:
    """A reproducible sdist NAME-VERSION.tar.gz of `files` (paths relative to its top folder)."""
    import tarfile

    path = Path(dest) / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{rel}")
            info.size, info.mtime, info.mode = len(data), 315532800, 0o644
            tar.addfile(info, io.BytesIO(data))
    return path
