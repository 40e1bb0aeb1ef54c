"""sitestack install: add packages to a layer without reinstalling or silently shadowing the stack.

uv resolves the request for the layer's python with every stack distribution the layer sees
held at its installed version (`-c name==version`); the layer's own distributions and the
stack's versions of `--shadow` names are only preferences (uv's existing-output-file
preferences), so nothing moves that need not. Into the layer goes exactly what the stack lacks,
with `uv pip install --no-deps` into a throw-away venv beside the layer (uv ignores a venv's
system site-packages, so a plain `uv pip install` would copy the stack into the layer); the
staged files are then moved in under the layer lock as one undoable step (layertx.py). When the
plan shadows the stack or replaces a layer copy, the result must pass `check` (no new problem)
or the move is undone; pure additions were already checked by the resolution. When the pinned resolution fails, a second one
with the stack's versions as mere preferences names the distributions that must move; the
refusal names each, the stack's version, what is required and by whom, and the `--shadow`
command that allows it. See docs/layers.md.

Length (just over ~400 lines): plan, refusal message and staged install are one
transaction with the layer's lock held; the undo journal already lives in layertx.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sitestack.core.records import StackRecord, UserPolicy
from sitestack.errors import BuildError, NotFoundError, UsageError
from sitestack.user.check import Dist, Problem, check, probe
from sitestack.user.layer import Layer, layer_lock, layer_stack, open_layer, populate
from sitestack.user.requested import Requested, merged, read, req_name, write


@dataclass(frozen=True)
class Item:
    name: str
    version: str
    stack: str | None = None  # the stack's version (for a shadow or a layer copy given back)


@dataclass(frozen=True)
class InstallResult:
    layer: Path
    stack: str
    inherit: bool
    requested: tuple[str, ...]
    from_stack: tuple[Item, ...]  # the stack provides these, at its versions
    install: tuple[Item, ...]  # into the layer; the stack lacks them
    shadow: tuple[Item, ...]  # into the layer over the stack's version (--shadow)
    unshadow: tuple[Item, ...]  # layer copies removed: the stack's version serves
    in_layer: tuple[Item, ...]  # already in the layer at the resolved version
    dry_run: bool
    forced: tuple[str, ...] = ()  # check problems accepted with --force

    @property
    def changes(self) -> bool:
        return bool(self.install or self.shadow or self.unshadow)


@dataclass(frozen=True)
class IndexOptions:
    """Command-line additions to the stack's [user] policy."""

    find_links: tuple[str, ...] = ()
    index_url: str | None = None
    no_index: bool = False


@dataclass
class _Resolved:
    pins: dict[str, tuple[str, str | None, str]] = field(default_factory=dict)  # name: (shown, version, line)
    via: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


def find_layer(arg: str | None) -> Layer:
    """--layer, else the active VIRTUAL_ENV when it is a layer of a stack."""
    if arg:
        return open_layer(arg)
    active = os.environ.get("VIRTUAL_ENV")
    if not active:
        raise UsageError("no layer to install into: give --layer PATH, or activate one "
                         "(source PATH/bin/activate)")
    try:
        lay = open_layer(active)
    except UsageError as e:
        raise UsageError(f"VIRTUAL_ENV={active} is not a layer ({e}); give --layer PATH") from None
    return lay


def read_requirements(packages: Sequence[str], files: Sequence[str]) -> list[str]:
    """The request: PKG arguments and -r files (requirement lines, comments, nested -r)."""
    from packaging.requirements import InvalidRequirement, Requirement

    out: list[tuple[str, str]] = [(p, "") for p in packages]

    def load(path: Path, depth: int) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read requirements file {path}: {getattr(e, 'strerror', None) or e}") from None
        for n, raw in enumerate(text.splitlines(), 1):
            line = re.sub(r"(^|\s)#.*", "", raw).strip()
            if not line:
                continue
            m = re.fullmatch(r"(?:-r|--requirement)(?:\s+|=)(.+)", line)
            if m and depth < 10:
                load(path.parent / m.group(1).strip(), depth + 1)
            elif line.startswith("-"):
                raise UsageError(f"{path}:{n}: {line!r}: only requirements and -r lines are supported here")
            else:
                out.append((line, f"{path}:{n}: "))

    for f in files:
        load(Path(f), 0)
    for req, where in out:
        try:
            Requirement(req)
        except InvalidRequirement as e:
            raise UsageError(f"{where}invalid requirement {req!r}: {str(e).splitlines()[0]}") from None
    return [r for r, _ in out]


def install(layer: str | None, packages: Sequence[str] = (), requirement_files: Sequence[str] = (), *,
            shadow: Sequence[str] = (), force: bool = False, dry_run: bool = False,
            index: IndexOptions | None = None) -> InstallResult:
    from packaging.utils import canonicalize_name

    lay = find_layer(layer)
    rec = layer_stack(lay)
    reqs = read_requirements(packages, requirement_files)
    if not reqs:
        raise UsageError("nothing to install: name packages or give -r FILE")
    stack_names = {str(canonicalize_name(n)) for n in rec.packages}
    allowed = []
    for s in shadow:
        n = str(canonicalize_name(s))
        if n not in stack_names:
            raise UsageError(f"--shadow {s}: the stack {rec.ref} has no distribution of that name")
        allowed.append(n)
    policy = _policy(rec.user, index or IndexOptions())
    hint_args = [a for s in allowed for a in ("--shadow", s)] + list(packages) + \
        [a for f in requirement_files for a in ("-r", f)]
    if dry_run:  # reads only: no lock file, no temp folder beside the layer
        return _run(lay, rec.ref, reqs, allowed, policy, force, True, hint_args, rec)
    from sitestack.user.layertx import recover

    with layer_lock(lay.path):
        recover(lay.path)
        return _run(lay, rec.ref, reqs, allowed, policy, force, False, hint_args, rec)


def _policy(u: UserPolicy, idx: IndexOptions) -> UserPolicy:
    from dataclasses import replace

    return replace(u, find_links=u.find_links + idx.find_links, index_url=idx.index_url or u.index_url,
                   no_index=u.no_index or idx.no_index)


def _run(lay: Layer, ref: str, reqs: list[str], allowed: list[str], policy: UserPolicy, force: bool,
         dry_run: bool, hint_args: list[str], rec: StackRecord) -> InstallResult:
    old = read(lay.path)  # first: a requested.json that is not what install writes stops here
    # The dist-info folders themselves (no subprocess): the stack is read-only, and what the
    # layer's python would see of it is its site-packages.
    stack = _dists(rec.site_packages, "stack") if lay.inherit else {}
    own = _dists(lay.site_packages, "layer")
    with tempfile.TemporaryDirectory(prefix="sitestack-install-") as w:
        res = _resolve(lay, reqs, stack, own, allowed, policy, Path(w))
        if res.error is not None:
            raise _refusal(lay, ref, reqs, stack, own, allowed, policy, Path(w), res.error, hint_args)
    plan = _plan(res, stack, own, ref)
    new_record = merged(old, reqs, allowed)
    from_stack, into, shadows, unshadow, in_layer = plan
    result = InstallResult(lay.path, ref, lay.inherit, tuple(reqs), from_stack, into, shadows, unshadow,
                           in_layer, dry_run=dry_run)
    if dry_run:
        return result
    if not result.changes:
        if new_record != old:
            write(lay.path, new_record)
        return result
    forced = _apply(lay, rec, result, res, own, policy, new_record, force)
    from dataclasses import replace

    return replace(result, forced=forced)


def _uv(args: list[str]) -> subprocess.CompletedProcess[str]:
    from sitestack.core.uvtool import uv_bin, uv_env

    return subprocess.run([uv_bin(), *args], capture_output=True, text=True, env=uv_env(), timeout=1800)


def _index(policy: UserPolicy) -> list[str]:
    from sitestack.core.uvtool import policy_args

    return policy_args(policy)


def _compile(lay: Layer, reqs: list[str], constraints: list[str], prefer: list[str], policy: UserPolicy,
             work: Path) -> _Resolved:
    """uv pip compile for the layer's python; `prefer` seeds the output file (uv's preferences)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    req, con, out = work / "request.in", work / "constraints.txt", work / "resolved.txt"
    req.write_text("".join(r + "\n" for r in reqs))
    con.write_text("".join(c + "\n" for c in [*constraints, *policy.constraints]))
    out.write_text("".join(p + "\n" for p in prefer))
    r = _uv(["pip", "compile", "-q", "--no-header", "--annotation-style", "line", "--python",
             str(lay.python), *_index(policy), "-c", str(con), str(req), "-o", str(out)])
    if r.returncode != 0:
        return _Resolved(error=(r.stderr.strip() or r.stdout.strip()))
    res = _Resolved()
    for raw in out.read_text().splitlines():
        body, _, comment = raw.partition("#")
        body = body.strip()
        if not body:
            continue
        rq = Requirement(body.split(";")[0].strip())
        name = str(canonicalize_name(rq.name))
        spec = str(rq.specifier)
        version = spec[2:] if spec.startswith("==") and rq.url is None else None
        res.pins[name] = (rq.name, version, body)
        m = re.search(r"via (.*)", comment.strip())
        if m:
            res.via[name] = [v.strip() for v in m.group(1).split(",")]
    return res


def _resolve(lay: Layer, reqs: list[str], stack: dict[str, Dist], own: dict[str, Dist], allowed: list[str],
             policy: UserPolicy, work: Path, unpin: frozenset[str] = frozenset()) -> _Resolved:
    # The layer's own copies are free to move (as pip would move them); the stack is held,
    # except for --shadow names, whose stack version is still preferred.
    held = {n for n in stack if n not in own and n not in allowed and n not in unpin}
    pins = [f"{stack[n].display}=={stack[n].version}" for n in sorted(held)]
    prefer = [f"{stack[n].display}=={stack[n].version}" for n in sorted(stack) if n not in held and n not in own] + \
             [f"{d.display}=={d.version}" for _, d in sorted(own.items())]
    return _compile(lay, reqs, pins, prefer, policy, work)


Plan = tuple[tuple[Item, ...], tuple[Item, ...], tuple[Item, ...], tuple[Item, ...], tuple[Item, ...]]


def _plan(res: _Resolved, stack: dict[str, Dist], own: dict[str, Dist], ref: str) -> Plan:
    from_stack: list[Item] = []
    into: list[Item] = []
    shadow: list[Item] = []
    unshadow: list[Item] = []
    in_layer: list[Item] = []
    for name, (shown, version, line) in sorted(res.pins.items()):
        s, o = stack.get(name), own.get(name)
        v = version or line
        if o is not None and version is not None and o.version == version:
            in_layer.append(Item(o.display, o.version, s.version if s else None))
        elif s is not None and version is not None and s.version == version:
            from_stack.append(Item(s.display, s.version))
            if o is not None:
                unshadow.append(Item(o.display, o.version, s.version))
        elif s is not None:
            shadow.append(Item(shown, v, s.version))
        else:
            into.append(Item(shown, v))
    return tuple(from_stack), tuple(into), tuple(shadow), tuple(unshadow), tuple(in_layer)


def _not_found(err: str, reqs: list[str]) -> str | None:
    names = {req_name(r) for r in reqs}
    for m in re.finditer(r"Because ([A-Za-z0-9][A-Za-z0-9._-]*)\S* was not found in", err):
        if req_name(m.group(1)) in names:
            return m.group(1)
    return None


def _refusal(lay: Layer, ref: str, reqs: list[str], stack: dict[str, Dist], own: dict[str, Dist],
             allowed: list[str], policy: UserPolicy, work: Path, err: str, hint_args: list[str]) -> Exception:
    """Why the pinned resolution failed, as a one-line error with the `--shadow` command."""
    from sitestack.core.uvtool import uv_reason

    where = ("the site's find-links" if policy.no_index else "the package index")
    missing = _not_found(err, reqs)
    if missing:
        return NotFoundError(f"no distribution named {missing} in {where}; nothing was installed")
    free = _resolve(lay, reqs, stack, own, allowed, policy, work, unpin=frozenset(stack))
    if free.error is not None:
        missing = _not_found(free.error, reqs)
        if missing:
            return NotFoundError(f"no distribution named {missing} in {where}; nothing was installed")
        return BuildError(f"the request does not resolve, even without the stack:\n{uv_reason(free.error)}")
    moved = sorted(n for n, (_, v, _) in free.pins.items() if n in stack and n not in own and v != stack[n].version)
    if not moved:
        return BuildError(f"the request does not resolve on {ref}:\n{uv_reason(err)}")
    parts = [_why(n, stack[n], err, free) for n in moved]
    shadows = " ".join(f"--shadow {stack[n].display}" for n in moved)
    cmd = shlex.join(["sitestack", "install", "--layer", str(lay.path), *hint_args])
    cmd = cmd.replace("sitestack install ", f"sitestack install {shadows} ", 1)
    return BuildError("; ".join(parts) + "; nothing was installed",
                      hint=f"to install {', '.join(stack[n].display for n in moved)} into this layer only: {cmd}")


def _why(name: str, s: Dist, err: str, free: _Resolved) -> str:
    """'needsnew requires shadowme>=2, but the stack has shadowme 1.0'."""
    pat = re.compile(r"(?:all versions of )?([A-Za-z0-9][A-Za-z0-9._-]*)(?:[=<>!~][^\s,]*)? depends? on "
                     rf"({re.escape(s.display)}|{re.escape(name)})([^\s,]*)", re.IGNORECASE)
    m = pat.search(err)
    if m and m.group(3):
        who, spec = m.group(1), m.group(3)
        return f"{who} requires {s.display}{spec}, but the stack has {s.display} {s.version}"
    m = re.search(rf"you require ({re.escape(s.display)}|{re.escape(name)})([^\s,]*)", err, re.IGNORECASE)
    if m and m.group(2):
        return f"you asked for {s.display}{m.group(2)}, but the stack has {s.display} {s.version}"
    via = ", ".join("your request" if v.startswith("-r ") else v for v in free.via.get(name, [])) or "the request"
    version = free.pins[name][1] or "another version"
    return f"{via} needs {s.display} {version}, but the stack has {s.display} {s.version}"


def _dists(sp: Path, where: str) -> dict[str, Dist]:
    from sitestack.core.dists import site_dists

    return {n: Dist(n, shown, v, (), None, str(sp), where) for n, (shown, v) in site_dists(sp).items()}


def _dist_files(layer: Path, sp: Path, d: Dist) -> list[Path]:
    """The files of a layer distribution, from its RECORD (plus the bytecode of its modules).

    Every path goes through core.safepath.inside: a RECORD row (or a dist-info folder
    reached through a link) that leaves the layer is not removed but reported, as pip
    refuses to uninstall files outside its environment."""
    import csv
    import email.parser

    from packaging.utils import canonicalize_name

    from sitestack.core.safepath import Escape, inside
    from sitestack.output import warn

    sp_rel = os.path.relpath(sp, layer)
    for info in sp.glob("*.dist-info"):
        try:
            meta = email.parser.Parser().parsestr((info / "METADATA").read_text(encoding="utf-8"), headersonly=True)
        except (OSError, UnicodeDecodeError):
            continue
        if canonicalize_name(meta["Name"] or "") != d.name or meta["Version"] != d.version:
            continue
        names = [f"{info.name}/{p.name}" for p in info.iterdir()]
        try:
            rows = list(csv.reader((info / "RECORD").read_text(encoding="utf-8").splitlines()))
        except (OSError, UnicodeDecodeError):
            rows = []
        names += [row[0] for row in rows if row and row[0]]
        files: list[Path] = []
        outside: list[str] = []
        for name in names:
            try:
                f = inside(layer, name if name.startswith("/") else os.path.join(sp_rel, name), "RECORD path")
            except Escape:
                outside.append(name)
                continue
            files.append(f)
            if f.suffix == ".py":
                files += list((f.parent / "__pycache__").glob(f"{f.stem}.*.pyc"))
        if outside:
            shown = ", ".join(repr(n) for n in outside[:3]) + (f" and {len(outside) - 3} more" if len(outside) > 3 else "")
            warn(f"{d.display} {d.version}: its RECORD names {shown}, outside the layer {layer}: left alone")
        return files
    return []


def _apply(lay: Layer, rec: StackRecord, result: InstallResult, res: _Resolved, own: dict[str, Dist],
           policy: UserPolicy, record: Requested, force: bool) -> tuple[str, ...]:
    """Stage with uv, move in undoably, check; undo on any failure."""
    import json

    from packaging.utils import canonicalize_name

    from sitestack.core.fsutil import crash_point, rmtree
    from sitestack.core.publish import make_temp
    from sitestack.core.relocate import rewrite_file
    from sitestack.user.layertx import Tx
    from sitestack.user.requested import record_path

    gone = {str(canonicalize_name(i.name)) for i in (*result.install, *result.shadow, *result.unshadow)}
    # Adding what neither stack nor layer has, resolved with everything else held, cannot break
    # what is there (uv checked it); a shadow, or a layer copy replaced or removed, can.
    gate = bool(result.shadow or result.unshadow or gone & set(own))
    known = {_key(p) for p in check(probe(lay))} if gate else set()
    # core.publish names the staging folder (host, pid) but does not clear stale ones: a killed
    # run's folder holds the journal of a half-done move, which layertx.recover (run under this
    # lock before we get here) must roll back first; clear_stale would only delete it.
    work = make_temp(lay.path.parent, f".{lay.path.name}.install-", 0o700)
    try:
        stage = work / "stage"
        os.mkdir(stage)
        populate(stage, stage, rec, inherit=False, user_site=True)
        skeleton = {Path(dp) / n for dp, dns, fns in os.walk(stage) for n in dns + fns} | {stage}
        lines = [res.pins[str(canonicalize_name(i.name))][2] for i in (*result.install, *result.shadow)]
        if lines:
            r = _uv(["pip", "install", "--no-deps", "--python", str(stage / "bin" / "python"),
                     *_index(policy), *lines])
            if r.returncode != 0:
                from sitestack.core.uvtool import uv_reason

                raise BuildError(f"installing failed; {lay.path} is unchanged:\n{uv_reason(r.stderr or r.stdout)}")
        for f in (stage / "bin").iterdir():
            if f not in skeleton and f.is_file() and not f.is_symlink():
                rewrite_file(f, str(stage), str(lay.path))  # the scripts' shebangs name the stage
        tx = Tx(lay.path, work)
        try:
            for n in sorted(gone & set(own)):
                tx.remove_files(_dist_files(lay.path, lay.site_packages, own[n]))
            tx.merge(stage, lay.path, skeleton)
            crash_point("install:after-merge")  # tests: a kill -9 with the layer half changed
            tx.write_file(record_path(lay.path), (json.dumps(record.to_json(), indent=2) + "\n").encode())
            new = [p for p in check(probe(open_layer(lay.path))) if _key(p) not in known] if gate else []
            if new and not force:
                listed = "; ".join(p.message() for p in new[:5])
                raise BuildError(f"refused: the result would fail `sitestack check` ({listed}); "
                                 f"{lay.path} is unchanged", hint="add --force to install anyway")
            tx.commit()
        except BaseException:
            tx.rollback()
            raise
        return tuple(p.message() for p in new)
    finally:
        rmtree(work)


def _key(p: Problem) -> tuple[str, str, str, str | None]:
    return (p.dist, p.kind, p.requirement, p.found)
