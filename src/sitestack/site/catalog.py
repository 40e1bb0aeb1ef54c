"""The static catalog site: every stack version, its packages, and what changed between versions.

Built from the site's records alone (``stack.json``, ``spec.toml``, ``tests.json``, state).
Pages come from the templates in ``templates/catalog/`` (package data), every string from a
record goes through ``html.escape``, and no page loads anything from the network. The site
is written into a temp folder beside the target and swapped in, so a web server never
serves half a catalog.

``refresh_catalog(site)`` rewrites the configured catalog (``sitestack config catalog DIR``);
``Site.update_state`` calls it, so build, default, deprecate, hide and retire all refresh it.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Protocol

from sitestack import __version__
from sitestack.core.layout import SiteRoot
from sitestack.core.records import SPEC, TESTS, RetiredRecord, StackRecord
from sitestack.errors import UsageError

MARKER = ".sitestack-catalog"  # in every catalog we write: we only ever replace our own
CATALOG_JSON = "catalog.json"
SPEC_BADGE = '<span class="badge spec">spec</span>'
PASSED = '<span class="badge pass">passed</span>'
FAILED = '<span class="badge fail">failed</span>'
SKIPPED = '<span class="badge none">skipped (no GPU)</span>'
RESULT = {"passed": PASSED, "failed": FAILED, "skipped": SKIPPED}


class SiteView(Protocol):
    """What the catalog reads from a Site (a Protocol: registry imports this module)."""

    root: SiteRoot

    def names(self) -> list[str]: ...
    def versions(self, name: str | None = None) -> list[StackRecord]: ...
    def state(self) -> dict[str, Any]: ...
    def stack_state(self, name: str, state: dict[str, Any] | None = None) -> dict[str, Any]: ...
    def default_version(self, name: str) -> str | None: ...
    def retired(self, name: str | None = None) -> list[RetiredRecord]: ...


@dataclass(frozen=True)
class CatalogResult:
    out: Path
    versions: int
    pages: int
    data: dict[str, Any]


def _template(name: str) -> Template:
    return Template(resources.files(__package__).joinpath("templates", "catalog", name).read_text(encoding="utf-8"))


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("templates", "catalog", name).read_text(encoding="utf-8")


def e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _spec_requirements(text: str) -> list[str]:
    """Canonical names the spec itself asks for (PyPI requirements and conda packages)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    from sitestack.errors import SpecError
    from sitestack.site.spec import parse_spec

    try:
        spec = parse_spec(text)
    except SpecError:
        return []
    names = []
    for r in spec.packages.requirements:
        try:
            names.append(canonicalize_name(Requirement(r).name))
        except InvalidRequirement:
            continue  # a path to a wheel: its name is not in the string
    for c in spec.conda.packages if spec.conda else ():
        m = re.match(r"[A-Za-z0-9_.-]+", c.split("::")[-1])
        if m:
            names.append(canonicalize_name(m.group(0)))
    return sorted(set(names))


def _smoke(rec: StackRecord) -> dict[str, Any]:
    try:
        results = json.loads((rec.records / TESTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        results = []
    tests = [{"test": str(r.get("test", "")), "status": _test_status(r), "output": str(r.get("output", ""))}
             for r in results if isinstance(r, dict)]
    count = {k: sum(t["status"] == k for t in tests) for k in ("passed", "failed", "skipped")}
    return {"total": len(tests), **count, "tests": tests}


def _test_status(r: dict[str, Any]) -> str:
    # Older records have only `ok`; a skipped GPU test has `ok: null` and is never a pass.
    status = r.get("status")
    if status in ("passed", "failed", "skipped"):
        return str(status)
    return "passed" if r.get("ok") is True else "failed"


def catalog_data(site: SiteView) -> dict[str, Any]:
    """The catalog as data (also written as catalog.json): one entry per version, in order."""
    state = site.state()
    stacks: list[dict[str, Any]] = []
    for name in site.names():
        s = site.stack_state(name, state)
        default = site.default_version(name)
        recs = site.versions(name)
        for i, rec in enumerate(recs):
            try:
                spec = (rec.records / SPEC).read_text(encoding="utf-8")
            except OSError:
                spec = ""
            stacks.append({
                "name": rec.name, "version": rec.version, "ref": rec.ref, "site": rec.site,
                "description": rec.description, "kind": rec.kind, "python": rec.python,
                "built": rec.built, "built_with": str(rec.extra.get("sitestack", "")),
                "prefix": str(rec.prefix), "bytes": rec.bytes, "files": rec.files,
                "default": rec.version == default, "hidden": rec.version in s["hidden"],
                "deprecated": s["deprecated"].get(rec.version),
                "packages": dict(sorted(rec.packages.items())),
                "requirements": _spec_requirements(spec), "spec": spec, "smoke": _smoke(rec),
                "previous": recs[i - 1].version if i else None,
                "next": recs[i + 1].version if i + 1 < len(recs) else None,
                "load": {"lmod": f"module load {rec.ref}", "modulepath": str(site.root.lmod_dir),
                         "modulepath_tcl": str(site.root.tcl_dir),
                         "shell": f'eval "$(sitestack --root {shlex.quote(str(site.root.path))} load {rec.ref})"'},
                "page": f"{rec.name}/{rec.version}.html",
                "diff_page": f"{rec.name}/{rec.version}.diff.html" if i else None,
            })
    # Retired versions stay listed, with date and message, so a user who still names one
    # finds out why it is gone and what replaced it.
    retired = [r.to_json() | {"ref": r.ref} for r in site.retired()]
    return {"format": 1, "generated": _now(), "sitestack": __version__, "root": str(site.root.path),
            "sites": sorted({v["site"] for v in stacks}), "stacks": stacks, "retired": retired}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _status(v: dict[str, Any]) -> str:
    out = []
    if v["default"]:
        out.append('<span class="badge default">default</span>')
    if v["deprecated"]:
        out.append('<span class="badge deprecated">deprecated</span>')
    if v["hidden"]:
        out.append('<span class="badge hidden">hidden</span>')
    return " ".join(out)


def _smoke_badge(v: dict[str, Any]) -> str:
    s = v["smoke"]
    if not s["total"]:
        return '<span class="badge none">none recorded</span>'
    skipped = f' <span class="badge none">{s["skipped"]} skipped</span>' if s["skipped"] else ""
    if not s["failed"]:
        return f'<span class="badge pass">{s["passed"]}/{s["total"] - s["skipped"]} passed</span>{skipped}'
    return f'<span class="badge fail">{s["failed"]} of {s["total"]} failed</span>{skipped}'


def _size(n: int) -> str:
    from sitestack.output import human_bytes

    return human_bytes(n)


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str | None, str | None]]:
    a, b = old["packages"], new["packages"]
    rows = []
    for n in sorted(set(a) | set(b)):
        if a.get(n) == b.get(n):
            continue
        kind = "added" if n not in a else "removed" if n not in b else "changed"
        rows.append((n, kind, a.get(n), b.get(n)))
    return rows


def render(data: dict[str, Any]) -> dict[str, str]:
    """{relative path: text} of every file of the site."""
    title = "Python stacks" + (f" at {', '.join(data['sites'])}" if data["sites"] else "")
    common = {"title": e(title), "tool_version": e(__version__), "generated": e(data["generated"][:16].replace("T", " ") + " UTC")}
    files: dict[str, str] = {"style.css": _asset("style.css"),
                             CATALOG_JSON: json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                             MARKER: "This folder is written by `sitestack catalog`; it is replaced on every rewrite.\n"}
    row_t, version_t, diff_t = _template("row.html"), _template("version.html"), _template("diff.html")
    by_ref = {v["ref"]: v for v in data["stacks"]}
    root_arg = shlex.quote(data["root"])
    rows = []
    for v in data["stacks"]:
        prev = by_ref.get(f"{v['name']}/{v['previous']}") if v["previous"] else None
        diff_link = ""
        if prev:
            d = _diff(prev, v)
            diff_link = f'<a href="{e(v["diff_page"])}">{len(d)} since {e(prev["version"])}</a>'
        desc = e(v["description"])
        if v["deprecated"]:
            desc += f'<div class="note">Deprecated: {e(v["deprecated"])}</div>'
        rows.append(row_t.substitute(
            packages=e(" ".join(f"{n}=={ver}" for n, ver in v["packages"].items())),
            href=e(v["page"]), ref=e(v["ref"]), description=desc, status=_status(v),
            python=e(v["python"]), package_count=len(v["packages"]), size=e(_size(v["bytes"])),
            built=e(v["built"]), built_date=e(v["built"][:10]), smoke=_smoke_badge(v), diff=diff_link,
        ).rstrip("\n"))
        files[v["page"]] = _version_page(version_t, v, prev, by_ref, data, common, root_arg)
        if prev:
            files[v["diff_page"]] = _diff_page(diff_t, prev, v, common)
    n = len(data["stacks"])
    names = len({v["name"] for v in data["stacks"]})
    count_text = f"{n} stack version{'s' if n != 1 else ''} of {names} stack{'s' if names != 1 else ''}"
    files["index.html"] = _template("index.html").substitute(
        common, rows="\n".join(rows), count_text=e(count_text), script=_asset("search.js"),
        retired=_retired_section(data.get("retired", [])))
    return files


def _retired_section(retired: list[dict[str, Any]]) -> str:
    if not retired:
        return ""
    rows = "\n".join(
        f'      <tr><td><code>{e(r["ref"])}</code></td><td>{e(r["retired"])}</td><td>{e(r["message"])}</td></tr>'
        for r in retired
    )
    return (
        '<section id="retired">\n  <h2>Retired versions</h2>\n'
        '  <p class="muted">These no longer load; <code>module load</code> says why.</p>\n'
        '  <table class="grid">\n    <thead><tr><th>Stack</th><th>Retired on</th><th>Message</th></tr></thead>\n'
        f"    <tbody>\n{rows}\n    </tbody>\n  </table>\n</section>"
    )


def _version_page(t: Template, v: dict[str, Any], prev: dict[str, Any] | None, by_ref: dict[str, Any],
                  data: dict[str, Any], common: dict[str, str], root_arg: str) -> str:
    req = set(v["requirements"])
    pkgs = "\n".join(
        f'        <tr><td class="mono">{e(n)}</td><td class="mono">{e(ver)}</td>'
        f'<td>{SPEC_BADGE if n in req else ""}</td></tr>'
        for n, ver in v["packages"].items())
    diffs = []
    if prev:
        diffs.append(f'<a href="{e(v["version"])}.diff.html">from {e(prev["ref"])}</a>')
    nxt = by_ref.get(f"{v['name']}/{v['next']}") if v["next"] else None
    if nxt:
        diffs.append(f'<a href="{e(nxt["version"])}.diff.html">to {e(nxt["ref"])}</a>')
    smoke = v["smoke"]
    details = ""
    if smoke["tests"]:
        items = "\n".join(
            f'      <tr><td class="mono">{e(t_["test"])}</td><td>'
            f'{RESULT[t_["status"]]}</td></tr>'
            for t_ in smoke["tests"])
        details = (f'  <section>\n    <h2>Smoke tests at build time</h2>\n    <table class="grid packages">\n'
                   f'      <thead><tr><th>Test</th><th>Result</th></tr></thead>\n      <tbody>\n{items}\n'
                   f'      </tbody>\n    </table>\n  </section>')
    deprecation = (f'  <p class="notice"><strong>Deprecated:</strong> {e(v["deprecated"])}</p>'
                   if v["deprecated"] else "")
    return t.substitute(
        common, ref=e(v["ref"]), name=e(v["name"]), status=_status(v), description=e(v["description"]),
        deprecation=deprecation, modulepath=e(shlex.quote(v["load"]["modulepath"])), root_arg=e(root_arg),
        python=e(v["python"]), kind=e(v["kind"]), built=e(v["built"]), built_with=e(v["built_with"] or "?"),
        size=e(_size(v["bytes"])), files=v["files"], prefix=e(v["prefix"]), smoke=_smoke_badge(v),
        diffs=" · ".join(diffs) or "first version", package_count=len(v["packages"]), packages=pkgs,
        spec=e(v["spec"]), smoke_details=details,
    )


def _diff_page(t: Template, old: dict[str, Any], new: dict[str, Any], common: dict[str, str]) -> str:
    d = _diff(old, new)
    counts = {k: sum(1 for r in d if r[1] == k) for k in ("added", "removed", "changed")}
    summary = ", ".join(f"{c} {k}" for k, c in counts.items()) + f" ({len(d)} packages differ)"
    rows = "\n".join(
        f'      <tr class="{kind}"><td class="mono">{e(n)}</td><td>{kind}</td>'
        f'<td class="mono">{e(a or "–")}</td><td class="mono">{e(b or "–")}</td></tr>'
        for n, kind, a, b in d) or '      <tr><td colspan="4" class="muted">No package changed.</td></tr>'
    py = ""
    if old["python"] != new["python"]:
        py = f'  <p class="notice">Python changed: {e(old["python"])} → {e(new["python"])}</p>'
    return t.substitute(
        common, name=e(new["name"]), old=e(old["ref"]), new=e(new["ref"]),
        old_href=e(f"{old['version']}.html"), new_href=e(f"{new['version']}.html"),
        summary=e(summary), python_change=py, rows=rows,
    )


def build_catalog(site: SiteView, out: Path) -> CatalogResult:
    """Write the whole catalog to `out`, replacing an earlier catalog there in one swap."""
    from sitestack.core.fsutil import atomic_write_text, file_lock, make_dirs
    from sitestack.core.publish import publish, temp_tree
    from sitestack.site.config import check_catalog_dir

    out = check_catalog_dir(site.root, Path(out))
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise UsageError(f"{out} exists and is not a sitestack catalog; refusing to replace it",
                         hint="give an empty or new folder")
    data = catalog_data(site)
    files = render(data)
    # Exact modes (folders 0755, pages 0644, the temp 0755), whatever the caller's umask: a
    # library caller may run under umask 000, and a web server's pages must not be writable.
    make_dirs(out.parent)
    with file_lock(out.parent / f".{out.name}.lock", what=f"catalog {out}"), \
            temp_tree(out.parent, f".{out.name}.tmp-", locked=True) as tmp:
        for rel, text in files.items():
            atomic_write_text(tmp / rel, text)  # makes its folders with make_dirs
        # One swap: a web server sees the old catalog or the new one, never half of either.
        publish(tmp, out, replace=True, allow_empty=True)
    return CatalogResult(out=out, versions=len(data["stacks"]), pages=sum(f.endswith(".html") for f in files), data=data)


def refresh_catalog(site: SiteView) -> CatalogResult | None:
    """Rewrite the site's configured catalog (`sitestack config catalog DIR`), if any.

    Called by Site.update_state after every change to the site's state (so by build, default,
    deprecate, hide and retire too); a new command that changes what the catalog shows calls
    it as well.
    """
    from sitestack.site.config import catalog_dir

    out = catalog_dir(site.root)
    return build_catalog(site, out) if out is not None else None


def configure_catalog(site: SiteView, folder: str | None) -> CatalogResult | None:
    """`sitestack config catalog DIR`: remember the folder and write the catalog there now
    (so a bad folder is refused before it is stored); None forgets it."""
    from sitestack.site.config import check_catalog_dir, set_config

    if folder is None:
        set_config(site.root, "catalog", None)
        return None
    res = build_catalog(site, check_catalog_dir(site.root, Path(folder)))
    set_config(site.root, "catalog", str(res.out))
    return res
