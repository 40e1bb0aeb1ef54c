"""Move a layer onto another stack, atomically.

The new layer is built in a temp folder beside the old one. Only the layer's own
distributions (those in its site-packages) are reinstalled, at the same versions where they
resolve with the new stack's packages held fixed (uv constraints), at resolved versions
otherwise; a distribution the new stack already has at that version is left to the stack.
uv installs with --no-deps what the resolution says the layer needs: uv does not see a
venv's system site-packages, so without that it would copy the stack into the layer.
The new layer must pass `check`; only then are its paths relocated to the final path and
the two folders swapped with one renameat2(RENAME_EXCHANGE). Until that swap the old layer
is never written to, so a failed or killed rebase leaves it byte-identical.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sitestack.core.dists import site_dists
from sitestack.core.publish import publish, temp_tree
from sitestack.core.records import SPEC
from sitestack.errors import BuildError, NotFoundError
from sitestack.user import requested as asked_record
from sitestack.user.layer import KEY_USER_SITE, find_stack, layer_lock, open_layer, populate
from sitestack.user.layertx import recover as recover_install


@dataclass(frozen=True)
class Change:
    name: str
    old: str | None
    new: str | None
    action: str  # "kept", "changed", "from-stack", "added"


@dataclass(frozen=True)
class RebaseResult:
    path: Path
    old_stack: str | None
    new_stack: str
    changes: tuple[Change, ...]
    kernels: tuple[str, ...] = ()  # the layer's Jupyter kernels, rewritten for the new stack


@dataclass(frozen=True)
class IndexOptions:
    find_links: tuple[str, ...] = ()
    index_url: str | None = None
    no_index: bool = False


def _index_from_spec(records: Path) -> IndexOptions:
    from sitestack.site.spec import parse_spec

    try:
        spec = parse_spec((records / SPEC).read_text(encoding="utf-8"))
    except Exception:  # an unreadable spec just means: no index defaults
        return IndexOptions()
    p = spec.packages
    return IndexOptions(tuple(p.find_links), p.index_url, p.no_index)


def _uv(args: list[str]) -> subprocess.CompletedProcess[str]:
    from sitestack.core.uvtool import uv_bin, uv_env

    return subprocess.run([uv_bin(), *args], capture_output=True, text=True, env=uv_env(), timeout=900)


def _compile(py: Path, pins: list[str], constraints: list[str], index: list[str], work: Path) -> list[str] | str:
    """Resolve with uv; the pins as `name==version` lines, or uv's reason as a string."""
    req, con = work / "layer.in", work / "stack.txt"
    req.write_text("".join(p + "\n" for p in pins))
    con.write_text("".join(c + "\n" for c in constraints))
    r = _uv(["pip", "compile", "-q", "--no-header", "--no-annotate", "--python", str(py),
             *index, "-c", str(con), str(req)])
    if r.returncode != 0:
        return r.stderr.strip() or r.stdout.strip()
    return [ln.strip() for ln in r.stdout.splitlines() if "==" in ln and not ln.lstrip().startswith("#")]


def rebase(path: str | os.PathLike[str], ref: str, *, root: str | None = None,
           index: IndexOptions | None = None, allow_missing_stack: bool = False) -> RebaseResult:
    from packaging.utils import canonicalize_name

    from sitestack.core.layout import SiteRoot, resolve_root
    from sitestack.core.manifest import scan
    from sitestack.core.relocate import relink, relocate
    from sitestack.site.registry import Site
    from sitestack.user.check import check, probe

    layer = open_layer(path)
    old = find_stack(layer)
    if old is None and not (allow_missing_stack and layer.stack_ref):
        what = layer.stack_ref or f"home {layer.home}"
        raise NotFoundError(
            f"{layer.path}: its stack ({what}) does not exist; both stacks must exist",
            hint="if the old stack was deleted, add --allow-missing-stack" if layer.stack_ref else None,
        )
    site_root = SiteRoot(Path(os.path.abspath(root))) if root else (
        SiteRoot(layer.stack_root) if layer.stack_root else
        SiteRoot(old.root) if old else resolve_root(None))
    new = Site(site_root).get(ref)
    idx = index if index is not None and (index.find_links or index.index_url or index.no_index) \
        else _index_from_spec(new.records)
    from sitestack.core.uvtool import index_args

    iargs = index_args(idx.find_links, idx.index_url, (), idx.no_index)
    final = layer.path
    with layer_lock(final):
        recover_install(final)  # a killed `sitestack install` is undone before we read the layer
        own = site_dists(layer.site_packages)
        # What `sitestack install` was asked for: kept even where the old stack provided it.
        asked = asked_record.read(final)
        new_stack = {str(canonicalize_name(k)): v for k, v in new.packages.items()}
        stack_has_pip = (new.prefix / "lib" / "sitestack-pip").is_dir() or "pip" in new_stack
        user_site = layer.cfg.get(KEY_USER_SITE, "false").lower() == "true"
        prompt = layer.cfg.get("prompt", "").strip("'\"") or None
        # We hold the layer's lock: any temp of a rebase of this layer is from a killed one.
        # At the end the temp's path holds the old layer (swapped out), and goes with it.
        with temp_tree(final.parent, f".{final.name}.rebase-", locked=True,
                       mode=os.stat(final).st_mode & 0o7777) as tmp:
            populate(tmp, tmp, new, inherit=layer.inherit, user_site=user_site, prompt=prompt)
            if asked.requirements:
                asked_record.write(tmp, asked)
            extra = [r for r in asked.requirements if asked_record.req_name(r) not in own]
            changes, install = _plan(own, new_stack, tmp, iargs, layer.inherit, stack_has_pip, extra)
            if install:
                r = _uv(["pip", "install", "--no-deps", "--python", str(tmp / "bin" / "python"), *iargs,
                         *install])
                if r.returncode != 0:
                    raise BuildError(f"installing into the new layer failed: {r.stderr.strip()[-800:]}")
            problems = check(probe(open_layer(tmp)))
            if problems:
                listed = "; ".join(p.message() for p in problems[:5])
                raise BuildError(f"the rebased layer would be broken ({listed}); {final} is unchanged")
            _m, hits = scan(tmp, [str(tmp)], exclude=())
            relocate(tmp, str(tmp), str(final), hits)
            relink(tmp, {str(tmp): str(final)})
            publish(tmp, final, replace=True)
    from sitestack.user.kernels import rewrite_for

    kernels = rewrite_for(final)  # the layer's Jupyter kernels now start it on the new stack
    return RebaseResult(final, old.ref if old else layer.stack_ref, new.ref, tuple(changes), tuple(kernels))


def _plan(own: dict[str, tuple[str, str]], stack: dict[str, str], tmp: Path, iargs: list[str],
          inherit: bool, stack_has_pip: bool, extra: list[str] | None = None) -> tuple[list[Change], list[str]]:
    """What to install into the new layer (pins), and the change list to report. `extra`: the
    layer's recorded requests that are not in its site-packages (the old stack had them)."""
    from packaging.utils import canonicalize_name

    keep = {n: v for n, v in own.items() if not (n == "pip" and stack_has_pip)}
    changes = [Change(own[n][0], own[n][1], stack.get(n), "from-stack") for n in own if n not in keep]
    extra = extra or []
    if not keep and not extra:
        return changes, []
    names = sorted(keep)
    constraints = [f"{n}=={v}" for n, v in sorted(stack.items()) if n not in keep] if inherit else []
    py = tmp / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="sitestack-rebase-") as w:
        work = Path(w)
        pinned = set(names)
        resolved = _compile(py, [f"{keep[n][0]}=={keep[n][1]}" for n in names] + extra, constraints, iargs, work)
        if isinstance(resolved, str):
            # Greedy: keep each pin that still resolves together with those kept before it.
            pinned = set()
            for n in names:
                trial = [f"{keep[m][0]}=={keep[m][1]}" if m in pinned | {n} else keep[m][0] for m in names] + extra
                if not isinstance(_compile(py, trial, constraints, iargs, work), str):
                    pinned.add(n)
            resolved = _compile(py, [f"{keep[m][0]}=={keep[m][1]}" if m in pinned else keep[m][0]
                                     for m in names] + extra, constraints, iargs, work)
            if isinstance(resolved, str):
                raise BuildError(f"the layer's packages do not resolve on the new stack:\n{resolved}")
    versions = {canonicalize_name(p.split("==")[0]): p.split("==", 1)[1].split(";")[0].strip() for p in resolved}
    install = []
    for n, v in sorted(versions.items()):
        if inherit and stack.get(n) == v:
            if n in keep:
                changes.append(Change(keep[n][0], keep[n][1], v, "from-stack"))
            continue
        install.append(f"{keep[n][0] if n in keep else n}=={v}")
        if n in keep:
            changes.append(Change(keep[n][0], keep[n][1], v, "kept" if v == keep[n][1] else "changed"))
        else:
            changes.append(Change(n, None, v, "added"))
    return sorted(changes, key=lambda c: canonicalize_name(c.name)), install
