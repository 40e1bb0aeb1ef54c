"""User layers: venvs on top of a stack, made by hand in a few milliseconds.

A layer is a standard venv (PEP 405): CPython finds `pyvenv.cfg` beside or above the
`bin/python` symlink it was started through, takes `home` as its base, and puts the
layer's site-packages first. We write that layout ourselves (no subprocess, no ensurepip)
and add three keys of our own (`sitestack-stack`, `sitestack-root`, `sitestack-user-site`)
so the layer knows its stack. Layers made by `python -m venv --system-site-packages` from a
stack are recognised from `home` instead.

User-site isolation: CPython's site.py enables the user site in a venv whenever
`include-system-site-packages = true`, and adds it *before* the stack's site-packages. A
layer made without --user-site carries `_sitestack_nousersite.pth`, whose one `import` line
sets `site.ENABLE_USER_SITE = False` while site.py is still processing the layer's own
site-packages, i.e. before it decides on the user site. See docs/layers.md.

The layer model: reading a layer and writing one are one format (pyvenv.cfg with our keys,
the activation scripts, the nousersite .pth), kept together. The stack a new layer sits on is
chosen by user/stackchoice.py (`sitestack venv`'s light start path).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.core import pyvenv
from sitestack.core.frozen import Frozen
from sitestack.errors import ConflictError, NotFoundError, UsageError

# `sitestack venv` is benchmarked against `uv venv` (bench/venv.py): its import path holds no
# typing, dataclasses, argparse, shutil or site registry. Hence the Frozen classes below.
if TYPE_CHECKING:
    from collections.abc import Iterator

    from sitestack.core.records import StackRecord, UserPolicy
    from sitestack.user.stackchoice import QuickStack

CFG = pyvenv.CFG
KEY_INHERIT = "include-system-site-packages"
KEY_STACK = "sitestack-stack"
KEY_ROOT = "sitestack-root"
KEY_USER_SITE = "sitestack-user-site"
NOUSERSITE_PTH = "_sitestack_nousersite.pth"
PIP_PTH = "_sitestack_pip.pth"
# Runs inside site.py while it processes the layer's site-packages: site.main() checks
# ENABLE_USER_SITE only afterwards, so the user site is never added.
NOUSERSITE_LINE = (
    "import site; site.ENABLE_USER_SITE = False"
    "  # sitestack: no user site in this layer (made without --user-site)\n"
)
PIP_SCRIPT = """\
# -*- coding: utf-8 -*-
# Written by sitestack: pip for this layer. pip comes from the layer if installed there,
# else from the stack (via _sitestack_pip.pth); either way it installs into this layer.
import sys
from pip._internal.cli.main import main
if __name__ == "__main__":
    if sys.argv[0].endswith("-script.pyw"):
        sys.argv[0] = sys.argv[0][:-11]
    elif sys.argv[0].endswith(".exe"):
        sys.argv[0] = sys.argv[0][:-4]
    sys.exit(main())
"""


class Layer(Frozen):
    """A venv, as its pyvenv.cfg describes it."""

    __slots__ = ("path", "cfg", "home", "inherit", "user_site", "stack_ref", "stack_root", "python_xy")
    path: Path
    cfg: dict[str, str]
    home: Path | None
    inherit: bool
    user_site: bool
    stack_ref: str | None  # NAME/VERSION recorded by `sitestack venv`
    stack_root: Path | None
    python_xy: str | None

    def __init__(self, path: Path, cfg: dict[str, str], home: Path | None, inherit: bool,
                 user_site: bool, stack_ref: str | None, stack_root: Path | None,
                 python_xy: str | None) -> None:
        self._init(path, cfg, home, inherit, user_site, stack_ref, stack_root, python_xy)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        if self.python_xy:
            return self.path / "lib" / f"python{self.python_xy}" / "site-packages"
        hits = sorted((self.path / "lib").glob("python*/site-packages"))
        return hits[-1] if hits else self.path / "lib" / "site-packages"

    @property
    def made_by_sitestack(self) -> bool:
        return self.stack_ref is not None


class Created(Frozen):
    __slots__ = ("path", "stack", "prefix", "inherit", "user_site", "pip")
    path: Path
    stack: str
    prefix: Path
    inherit: bool
    user_site: bool
    pip: bool

    def __init__(self, path: Path, stack: str, prefix: Path, inherit: bool, user_site: bool,
                 pip: bool) -> None:
        self._init(path, stack, prefix, inherit, user_site, pip)


def _xy(cfg: dict[str, str]) -> str | None:
    m = re.match(r"(\d+)\.(\d+)", cfg.get("version") or cfg.get("version_info") or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def open_layer(path: str | os.PathLike[str]) -> Layer:
    """Read a venv's pyvenv.cfg; UsageError when `path` is not a venv."""
    p = Path(os.path.abspath(os.path.expanduser(path)))
    cfg_path = p / CFG
    if not p.is_dir():
        raise NotFoundError(f"{p} does not exist or is not a folder")
    try:
        cfg = pyvenv.read(cfg_path)
    except FileNotFoundError:
        raise UsageError(f"{p} is not a venv (no {CFG})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {cfg_path}: {e}") from None
    home = Path(cfg["home"]) if cfg.get("home") else None
    root = cfg.get(KEY_ROOT)
    return Layer(
        path=p,
        cfg=cfg,
        home=home,
        # site.py treats a missing key as "true"; only the exact word "true" enables it.
        inherit=cfg.get(KEY_INHERIT, "true").lower() == "true",
        user_site=cfg.get(KEY_USER_SITE, "true" if not cfg.get(KEY_STACK) else "false").lower() == "true",
        stack_ref=cfg.get(KEY_STACK) or None,
        stack_root=Path(root) if root else None,
        python_xy=_xy(cfg),
    )


def find_stack(layer: Layer) -> StackRecord | None:
    """The layer's stack: from its sitestack keys, else from `home` (plain venvs)."""
    from sitestack.core.layout import SiteRoot
    from sitestack.site.registry import Site

    if layer.stack_ref and layer.stack_root:
        try:
            return Site(SiteRoot(layer.stack_root)).get(layer.stack_ref)
        except NotFoundError:
            return None
    if layer.home is None:
        return None
    for cand in (layer.home.parent, Path(os.path.realpath(layer.home)).parent):
        rec = Site.from_prefix(cand)
        if rec is not None:
            return rec
    return None


def layer_stack(layer: Layer) -> StackRecord:
    """Like find_stack, but a one-line NotFoundError (exit 2) when the stack is unknown."""
    rec = find_stack(layer)
    if rec is not None:
        return rec
    if layer.stack_ref:
        raise NotFoundError(
            f"{layer.path} sits on {layer.stack_ref}, which no longer exists in {layer.stack_root}",
            hint=f"sitestack doctor {layer.path}",
        )
    raise NotFoundError(f"{layer.path} is a venv of an unknown stack (home = {layer.home})")


def _activate_scripts(rec: StackRecord | QuickStack, layer: Path, prompt: str) -> dict[str, str]:
    """The stdlib venv templates of the stack's own Python, filled in as venv would."""
    scripts = rec.prefix / "lib" / f"python{rec.python_xy}" / "venv" / "scripts"
    out: dict[str, str] = {}
    for rel in ("common/activate", "posix/activate.csh", "posix/activate.fish"):
        try:
            text = (scripts / rel).read_text(encoding="utf-8")
        except OSError:
            continue
        # 3.11 puts the parentheses in the value, 3.12+ in the template; templates that no
        # longer quote placeholders (gh-124651) expect shell-quoted values.
        shown = prompt if "(__VENV_PROMPT__)" in text else f"({prompt}) "
        values = {"__VENV_DIR__": str(layer), "__VENV_NAME__": layer.name, "__VENV_PROMPT__": shown,
                  "__VENV_BIN_NAME__": "bin", "__VENV_PYTHON__": str(layer / "bin" / "python")}
        quoted = '"__VENV_DIR__"' in text
        if not quoted:
            import shlex
        for k, v in values.items():
            text = text.replace(k, v if quoted else shlex.quote(v))
        out[rel.split("/")[-1]] = text
    return out


def cfg_text(rec: StackRecord | QuickStack, layer: Path, *, inherit: bool, user_site: bool, prompt: str | None) -> str:
    flags = ("" if inherit else " --no-inherit") + (" --user-site" if user_site else "")
    items = [
        ("home", str(rec.prefix / "bin")),
        (KEY_INHERIT, "true" if inherit else "false"),
        ("version", rec.python),
        ("executable", str(rec.python_exe)),
        ("command", f"sitestack venv --stack {rec.ref}{flags} {layer}"),
    ]
    if prompt:
        items.append(("prompt", repr(prompt)))  # as `python -m venv` writes it
    items += [(KEY_STACK, rec.ref), (KEY_ROOT, str(rec.root)),
              (KEY_USER_SITE, "true" if user_site else "false")]
    return pyvenv.dumps(items)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)  # the umask must not take x off the scripts


def populate(tmp: Path, final: Path, rec: StackRecord | QuickStack, *, inherit: bool = True,
             user_site: bool = False, prompt: str | None = None) -> bool:
    """Write a layer into `tmp` whose files name `final`. Returns whether pip was wired."""
    xy = rec.python_xy
    bindir = tmp / "bin"
    sp = tmp / "lib" / f"python{xy}" / "site-packages"
    bindir.mkdir()
    sp.mkdir(parents=True)
    os.symlink("lib", tmp / "lib64")
    # The link is not resolved: CPython finds pyvenv.cfg from the link's own location.
    os.symlink(str(rec.prefix / "bin" / f"python{xy}"), bindir / "python")
    for alias in ("python3", f"python{xy}"):
        os.symlink("python", bindir / alias)
    _write(tmp / CFG, cfg_text(rec, final, inherit=inherit, user_site=user_site, prompt=prompt))
    for name, text in _activate_scripts(rec, final, prompt or final.name).items():
        _write(bindir / name, text)
    if not user_site:
        _write(sp / NOUSERSITE_PTH, NOUSERSITE_LINE)
    policy = rec.user  # a QuickStack's is always empty
    if policy:
        write_pip_conf(tmp, final, rec.ref, policy)
    layer_pip = rec.prefix / "lib" / "sitestack-pip"
    has_pip = layer_pip.is_dir() or _has_pip_dist(rec.site_packages)
    if layer_pip.is_dir():
        # Appended after the layer's own site-packages: a pip the user installs wins.
        _write(sp / PIP_PTH, f"{layer_pip}\n")
    if has_pip:
        script = f"#!{final / 'bin' / 'python'}\n{PIP_SCRIPT}"
        from sitestack.core.shebang import fix_shebang  # too long, or a space: the sh trick

        script = fix_shebang(script.encode()).decode()
        for name in ("pip", "pip3", f"pip{xy}"):
            _write(bindir / name, script, 0o755)
    return has_pip


def _has_pip_dist(site_packages: Path) -> bool:
    """Whether `site_packages` holds a pip-*.dist-info (a listing: Path.glob compiles a regex)."""
    try:
        names = os.listdir(site_packages)
    except OSError:
        return False
    return any(n.startswith("pip-") and n.endswith(".dist-info") for n in names)


def write_pip_conf(tmp: Path, final: Path, ref: str, u: UserPolicy) -> None:
    """Stack `ref`'s [user] policy as `pip.conf` (pip reads $VIRTUAL_ENV/pip.conf), so plain pip
    in the layer follows it; constraints go in a file, since pip's `constraint` takes a path."""
    from sitestack.core.records import LAYER_CONSTRAINTS, LAYER_PIP_CONF
    from sitestack.core.shape import Shape
    from sitestack.core.stackref import records_dir
    from sitestack.errors import VerifyError

    # The spec refused line breaks already; the stack's record is read back from disk, and a
    # value with one would add a setting of its own to pip.conf (core.shape.line_safe).
    record = Shape(f"{ref}: the [user] table of its stack.json", VerifyError)
    for key, values in (("find-links", u.find_links), ("index-url", [u.index_url] if u.index_url else []),
                        ("extra-index-url", u.extra_index_url), ("only-binary", u.only_binary),
                        ("constraints", u.constraints)):
        for v in values:
            record.text(v, key)
    lines = [f"# Written by sitestack from the [user] table of {ref}: plain pip in this layer",
             "# follows the site's package policy, as `sitestack install` does.", "[global]"]
    if u.find_links:
        lines += ["find-links ="] + [f"    {x}" for x in u.find_links]
    if u.index_url:
        lines.append(f"index-url = {u.index_url}")
    if u.extra_index_url:
        lines += ["extra-index-url ="] + [f"    {x}" for x in u.extra_index_url]
    if u.no_index:
        lines.append("no-index = true")
    lines.append("[install]")
    if u.constraints:
        records_dir(tmp).mkdir(exist_ok=True)
        _write(records_dir(tmp) / LAYER_CONSTRAINTS, "".join(c + "\n" for c in u.constraints))
        lines.append(f"constraint = {records_dir(final) / LAYER_CONSTRAINTS}")
    if u.only_binary:
        lines.append(f"only-binary = {','.join(u.only_binary)}")
    _write(tmp / LAYER_PIP_CONF, "\n".join(lines) + "\n")


def create_layer(path: str | os.PathLike[str], rec: StackRecord | QuickStack, *, inherit: bool = True,
                 user_site: bool = False, prompt: str | None = None) -> Created:
    """Make the layer in a temp folder beside `path`, then rename it into place."""
    final = Path(os.path.abspath(os.path.expanduser(path)))
    if not rec.python_exe.exists():
        raise NotFoundError(f"{rec.ref}: its interpreter {rec.python_exe} is missing")
    if os.path.lexists(final) and not (final.is_dir() and not final.is_symlink() and not any(final.iterdir())):
        raise ConflictError(f"{final} already exists; choose another path or remove it")
    from sitestack.core.fsutil import check_can_create
    from sitestack.core.publish import publish, temp_tree

    check_can_create(final, f"the layer {final}")  # a file in the way, or not ours to write
    cfg_text(rec, final, inherit=inherit, user_site=user_site, prompt=prompt)  # a path pyvenv.cfg cannot carry
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        # mode None: the umask applies, as for any folder the user makes.
        with temp_tree(final.parent, f".{final.name}.new-", mode=None) as tmp:
            pip = populate(tmp, final, rec, inherit=inherit, user_site=user_site, prompt=prompt)
            publish(tmp, final, allow_empty=True)  # takes over an empty folder, nothing else
    except OSError as e:
        if final.exists():
            raise ConflictError(f"{final} already exists (made meanwhile?): {e}") from None
        raise
    return Created(final, rec.ref, rec.prefix, inherit, user_site, pip)


def set_inherit(path: str | os.PathLike[str], on: bool) -> tuple[Layer, bool]:
    """Flip include-system-site-packages, touching nothing else. Returns (layer, changed)."""
    from sitestack.core.fsutil import atomic_write_text

    layer = open_layer(path)
    layer_stack(layer)  # a layer of an unknown stack is bad input: change nothing
    with layer_lock(layer.path):
        cfg_path = layer.path / CFG
        data = cfg_path.read_bytes().decode("utf-8")  # open_layer read it as UTF-8 already
        # In place, on the line site.py uses (the last); every other byte stays.
        new = pyvenv.update(data, {KEY_INHERIT: "true" if on else "false"})
        if new == data:
            return layer, False
        mode = os.stat(cfg_path).st_mode & 0o7777
        atomic_write_text(cfg_path, new, mode)
    return open_layer(layer.path), True


def lock_path(layer: Path) -> Path:
    # Beside the layer, not in it: a rebase swaps the folder, and a failed one must leave
    # the old layer byte-identical.
    return layer.parent / f".{layer.name}.sitestack-lock"


@contextlib.contextmanager
def layer_lock(layer: Path, timeout: float = -1) -> Iterator[None]:
    from sitestack.core.fsutil import file_lock

    with file_lock(lock_path(layer), timeout=timeout, what=f"layer {layer}"):
        yield

