"""sitestack doctor: what is wrong with this shell and these layers, and the command that fixes it."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.site.retire import default_ref, retired_of
from sitestack.user.layer import Layer, find_stack, open_layer

if TYPE_CHECKING:
    from sitestack.core.records import RetiredRecord, StackRecord


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    message: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "message": self.message, "fix": self.fix}


def _q(p: object) -> str:
    return shlex.quote(str(p))


def _stack_of_bin(entry: str) -> StackRecord | None:
    from sitestack.core.layout import records_dir
    from sitestack.core.records import STACK_JSON
    from sitestack.site.registry import Site

    if not entry or not os.path.isabs(entry):
        return None
    prefix = Path(entry).parent
    if Path(entry).name != "bin" or not (records_dir(prefix) / STACK_JSON).is_file():
        return None
    return Site.from_prefix(prefix)


def check_shell(env: dict[str, str]) -> list[Finding]:
    """PYTHONUSERBASE/bin on PATH, one stack on PATH, no user-base package shadowing the stack."""
    out: list[Finding] = []
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    ub = env.get("PYTHONUSERBASE")
    if ub and env.get("SITESTACK_STACK"):
        ub_bin = os.path.join(ub, "bin")
        if os.path.normpath(ub_bin) not in {os.path.normpath(p) for p in path}:
            out.append(Finding(
                "userbase-bin-not-on-path", ub_bin,
                f"{ub_bin} (where `pip install --user` puts scripts) is not on PATH",
                f'export PATH={_q(ub_bin)}:"$PATH"'))
    stacks: dict[Path, StackRecord] = {}
    for p in path:
        rec = _stack_of_bin(p)
        if rec is not None:
            stacks.setdefault(rec.prefix, rec)
    if len(stacks) > 1:
        loaded = env.get("SITESTACK_PREFIX")
        keep = next((r for r in stacks.values() if loaded and os.path.realpath(r.prefix) == os.path.realpath(loaded)),
                    next(iter(stacks.values())))
        drop = [r for r in stacks.values() if r is not keep]
        kept = [p for p in path if not any(os.path.normpath(p) == os.path.normpath(r.prefix / "bin") for r in drop)]
        names = ", ".join(r.ref for r in stacks.values())
        out.append(Finding(
            "two-stacks-on-path", names,
            f"{len(stacks)} stacks are on PATH ({names}); the first one's python wins, "
            f"scripts may come from the other",
            f"export PATH={_q(os.pathsep.join(kept))}"))
    loaded_rec = None
    if env.get("SITESTACK_PREFIX"):
        from sitestack.site.registry import Site

        loaded_rec = Site.from_prefix(Path(env["SITESTACK_PREFIX"]))
    if ub and loaded_rec is not None:
        out += _userbase_shadows(Path(ub), loaded_rec)
    return out


def _userbase_shadows(ub: Path, rec: StackRecord) -> list[Finding]:
    from sitestack.core.dists import site_dists

    user_sp = ub / "lib" / f"python{rec.python_xy}" / "site-packages"
    from packaging.utils import canonicalize_name

    stack = {str(canonicalize_name(k)): v for k, v in rec.packages.items()}
    out = []
    for n, (name, version) in sorted(site_dists(user_sp).items()):
        if n in stack:
            out.append(Finding(
                "userbase-shadows-stack", f"{name} ({user_sp})",
                f"{name} {version} in your user base shadows {rec.ref}'s {name} {stack[n]} "
                "for every plain use of the stack",
                f"PYTHONUSERBASE={_q(ub)} {_q(rec.python_exe)} -m pip uninstall -y {name}"))
    return out


def check_layer(layer: Layer) -> list[Finding]:
    from sitestack.core.layout import SiteRoot
    from sitestack.site.registry import Site
    from sitestack.user.check import check, probe

    out: list[Finding] = []
    p = layer.path
    rec = find_stack(layer)
    # The bin/python link ends in home: if it dangles, the layer's python cannot start.
    home_ok = layer.home is not None and layer.home.is_dir() and (p / "bin" / "python").exists()
    if rec is None:
        gone = retired_of(layer.stack_ref, layer.stack_root, layer.home)
        if gone is not None:
            return [_retired_finding("layer", p, gone, rebase=bool(layer.stack_ref), sp=layer.site_packages)]
        name = (layer.stack_ref or "").split("/")[0]
        root = layer.stack_root
        target = default_ref(name, root) if name and root else None
        fix = (f"sitestack rebase {_q(p)} {target} --allow-missing-stack" if target
               else f"sitestack venv {_q(str(p) + '.new')} --stack NAME/VERSION  "
                    f"# then reinstall: {_q(p / 'bin' / 'python')} -m pip freeze")
        what = f"its stack {layer.stack_ref} no longer exists in {root}" if layer.stack_ref \
            else f"it is not on a known stack (home = {layer.home})"
        out.append(Finding("stack-missing", str(p), f"layer {p}: {what}", fix))
        if not home_ok:
            out.append(Finding("home-missing", str(p), f"layer {p}: its home {layer.home} no longer exists", fix))
        return out
    site = Site(SiteRoot(rec.root))
    default = default_ref(rec.name, rec.root)
    rebase_fix = f"sitestack rebase {_q(p)} {default}" if default and default != rec.ref else None
    if not home_ok:
        out.append(Finding("home-missing", str(p), f"layer {p}: its home {layer.home} no longer exists",
                           f"sitestack rebase {_q(p)} {rec.ref}"))
        return out
    vs = site.version_state(rec)
    if vs.hidden:
        out.append(Finding("stack-hidden", str(p), f"layer {p} sits on {rec.ref}, which is hidden (being retired)",
                           rebase_fix or f"sitestack rebase {_q(p)} NAME/VERSION"))
    if vs.deprecated:
        out.append(Finding("stack-deprecated", str(p),
                           f"layer {p} sits on {rec.ref}, which is deprecated: {vs.deprecated}",
                           rebase_fix or f"sitestack rebase {_q(p)} NAME/VERSION"))
    for prob in check(probe(layer)):
        out.append(Finding("broken-requirement", str(p), f"layer {p}: {prob.message()}", prob.fix))
    return out


def _retired_finding(what: str, p: Path, gone: RetiredRecord, *, rebase: bool, sp: Path | None = None,
                     thin: bool = False) -> Finding:
    root = gone.prefix.parents[2]
    default = default_ref(gone.name, root) or f"{gone.name}/VERSION"
    if what == "clone":
        fix = f"sitestack --root {_q(root)} clone {default} --prefix {_q(str(p) + '.new')}"
    elif rebase:
        # The old stack is gone, so rebase needs --allow-missing-stack to start from the records.
        fix = f"sitestack rebase {_q(p)} {default} --allow-missing-stack"
    else:
        fix = (f"sitestack --root {_q(root)} venv {_q(str(p) + '.new')} --stack {default}  "
               f"# then reinstall what `pip freeze --path {_q(sp)}` lists")
    broken = " (a thin clone: it no longer runs)" if thin else ""
    return Finding("stack-retired", str(p),
                   f"{what} {p} sits on {gone.ref}, retired on {gone.date}: {gone.message}{broken}", fix)


def check_clone(path: Path) -> list[Finding]:
    """A clone keeps working without its stack (unless thin), but its stack may be retired."""
    from sitestack.user.clone import load_clone_record

    data = load_clone_record(path) or {}
    src = data.get("source_prefix")
    gone = retired_of(None, None, Path(str(src))) if src else None
    if gone is None:
        return []
    return [_retired_finding("clone", path, gone, rebase=False, thin=bool(data.get("depends_on_stack")))]


def check_install_leftovers(layer: Path) -> list[Finding]:
    from sitestack.core.publish import HOST
    from sitestack.user.layertx import leftovers

    out = []
    for lo in leftovers(layer):
        if lo.untrusted is not None:
            mine = lo.uid in (None, os.geteuid())
            out.append(Finding(
                "install-leftover-untrusted", str(lo.path),
                f"layer {layer}: {lo.path} is named like a killed `sitestack install`'s staging folder, "
                f"but {lo.untrusted}; sitestack leaves it alone",
                f"rm -rf {_q(lo.path)}  # after checking what it is" if mine else
                f"# owned by uid {lo.uid}: ask them or an administrator to remove {_q(lo.path)}"))
            continue
        if lo.pending:
            what = ("the layer holds part of its changes; the fix moves them back (as the next "
                    "`sitestack install` into it would)")
        else:
            what = "nothing of it is in the layer; the fix deletes it"
        fix = f"sitestack doctor --fix {_q(layer)}"
        if not lo.local_dead:
            fix += f"  # on host {lo.host}: only there can its pid be checked"
        who = f" (pid {lo.pid} on {lo.host})" if lo.pid is not None and lo.host != HOST else \
            f" (pid {lo.pid}, gone)" if lo.pid is not None else ""
        out.append(Finding("install-interrupted", str(lo.path),
                           f"layer {layer}: a killed `sitestack install`{who} left {lo.path}; {what}", fix))
    return out


def fix_install_leftovers(layer: Path) -> list[Path]:
    """Undo and remove the leftovers of killed installs of `layer`: under the layer's lock,
    taken without waiting (ConflictError, exit 5, while an install holds it), and only those
    whose process is gone (this host's, by pid) and whose journal is honoured (the layer
    owner's, every path confined: layertx.read_journal). Anything else is left alone, and
    the diagnosis that follows names it. Returns the folders removed."""
    from sitestack.core.fsutil import rmtree
    from sitestack.user.layer import layer_lock
    from sitestack.user.layertx import leftovers, rollback

    if not any(lo.untrusted is None for lo in leftovers(layer)):
        return []  # nothing to do: no lock file made, nothing taken
    removed = []
    with layer_lock(layer, timeout=0):
        for lo in leftovers(layer, have_lock=True):
            if lo.untrusted is None and lo.local_dead:
                rollback(lo.path, layer)  # a finished journal, or none, has nothing to undo
                rmtree(lo.path)
                removed.append(lo.path)
    return removed


def _targets(paths: list[str], env: dict[str, str]) -> list[str]:
    return paths or ([env["VIRTUAL_ENV"]] if env.get("VIRTUAL_ENV") else [])


def fix(paths: list[str], env: dict[str, str] | None = None) -> list[Path]:
    """`doctor --fix`: what doctor can repair itself (killed installs' leftovers) in the
    named layers, else $VIRTUAL_ENV. Returns what was removed."""
    env = dict(os.environ if env is None else env)
    removed: list[Path] = []
    for t in _targets(paths, env):
        removed += fix_install_leftovers(Path(os.path.abspath(os.path.expanduser(t))))
    return removed


def diagnose(paths: list[str], env: dict[str, str] | None = None) -> list[Finding]:
    """The shell's findings, then each layer's or clone's (the named ones, else $VIRTUAL_ENV)."""
    from sitestack.core.layout import records_dir
    from sitestack.user.clone import CLONE_RECORD
    from sitestack.user.kernels import stale

    env = dict(os.environ if env is None else env)
    findings = check_shell(env)
    # The user's Jupyter kernels: one that starts nothing, or the wrong python, fails quietly.
    findings += [Finding(*f) for f in stale(env)]
    for t in _targets(paths, env):
        path = Path(os.path.abspath(os.path.expanduser(t)))
        if not (path / "pyvenv.cfg").is_file() and (records_dir(path) / CLONE_RECORD).is_file():
            findings += check_clone(path)
        else:
            # First: a half-done install explains any broken requirement check_layer finds.
            findings += check_install_leftovers(path)
            findings += check_layer(open_layer(t))
    return findings
