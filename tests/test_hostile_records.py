"""Issue 23, hostile input round 3: what a layer, its records and the site's state say is
never trusted. Each class builds its hostile input for real (a crafted wheel whose RECORD
pip keeps, a journal planted by another real user in a shared sticky folder, a spec with a
newline, a forged retired.json, a planted symlink, a crafted $_SITESTACK_SAVED in a real
bash) and checks the exit code, the one-line message and, by tree hashes before and after,
that nothing outside its place changed.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitestack.core.layout import SiteRoot
from sitestack.core.publish import HOST
from sitestack.core.records import StackRecord
from sitestack.errors import VerifyError
from tests.helpers import users
from tests.helpers.cli import REPO, one_error, run_cli
from tests.helpers.env import clean_env, offline_env
from tests.helpers.layers import make_layer, pyrun, tree_digest
from tests.helpers.stacks import BuildStack, make_builder
from tests.helpers.wheels import make_wheel

SRC = REPO / "src" / "sitestack"


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def site_digest(root: SiteRoot) -> dict[str, str]:
    """The site's tree, but the lock files (a lock holder writes its name into them)."""
    return {k: v for k, v in tree_digest(root.path).items() if not k.startswith(".sitestack/locks/")}


def cli(root: SiteRoot, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--root", str(root.path), env=env or clean_env())


@pytest.fixture()
def shared(tmp_path: Path) -> Iterator[Path]:
    """A world-readable scratch folder (tmp_path is 0700: another user could not enter it)."""
    d = Path(tempfile.mkdtemp(prefix="sitestack-hostile-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --- a site of its own: hx/1 (published as an archive, then retired) and hx/2 ----------------------

@pytest.fixture(scope="module")
def hsite(workdir: Path, wheelhouse: Path) -> tuple[SiteRoot, BuildStack]:
    root = SiteRoot(workdir / "site-hostile")
    root.path.mkdir()
    b = make_builder(root, wheelhouse)
    b("hx", "1", ["shadowme==1.0"], imports=["shadowme"])
    b("hx", "2", ["shadowme==2.0"], default=True, imports=["shadowme"])
    return root, b


@pytest.fixture(scope="module")
def retired(hsite: tuple[SiteRoot, BuildStack]) -> SiteRoot:
    root, _ = hsite
    for args in (("pack", "hx/1", "--publish"), ("retire", "hx/1", "--keep-archive", "--message", "use hx/2")):
        r = cli(root, *args)
        assert r.returncode == 0, r.stderr
    return root


# --- 1. RECORD rows outside the layer ---------------------------------------------------------------

def test_install_leaves_record_rows_outside_the_layer_alone(stack: StackRecord, site_root: SiteRoot,
                                                            tmp_path: Path) -> None:
    """A wheel whose RECORD names ../../../../victim/x.txt and an absolute path (pip keeps both
    in the installed RECORD): upgrading it with `sitestack install` removes neither file."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "x.txt").write_text("keep me")
    (victim / "abs.txt").write_text("keep me too")
    wh = tmp_path / "wh"
    make_wheel(wh, "evil", "1.0", record_rows=["../../../../victim/x.txt", str(victim / "abs.txt")])
    make_wheel(wh, "evil", "2.0")
    layer = make_layer(tmp_path / "L", site_root.path)
    r = subprocess.run([str(layer / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(wh),
                        "evil==1.0"], capture_output=True, text=True, env=offline_env())
    assert r.returncode == 0, r.stderr
    record = next(layer.glob("lib/python*/site-packages/evil-1.0.dist-info/RECORD")).read_text()
    assert "../../../../victim/x.txt" in record and str(victim / "abs.txt") in record  # pip kept them
    before = tree_digest(victim)
    r = run_cli("install", "--layer", str(layer), "--find-links", str(wh), "--no-index", "evil==2.0",
                env=clean_env())
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("sitestack: warning: evil 1.0: its RECORD names"), r.stderr
    assert "outside the layer" in warnings[0] and "Traceback" not in r.stderr
    assert tree_digest(victim) == before
    assert pyrun(layer, "import evil; print(evil.__version__)").stdout.strip() == "2.0"
    assert not list(layer.glob("lib/python*/site-packages/evil-1.0.dist-info"))


# --- 2. install journals: only the owner's, every path confined ------------------------------------

def plant(path: Path, steps: list[dict[str, object]]) -> str:
    """Shell code that makes a staging folder with a journal, as `sitestack install` would."""
    lines = "".join(json.dumps(s) + "\n" for s in steps)
    return (f"mkdir -m 700 {shlex.quote(str(path))} && mkdir -m 700 {shlex.quote(str(path / 'stage'))} && "
            f"printf %s {shlex.quote(lines)} > {shlex.quote(str(path / 'journal.jsonl'))} && "
            f"chmod 600 {shlex.quote(str(path / 'journal.jsonl'))}")


def test_planted_and_unconfined_journals_are_reported_and_left_alone(stack: StackRecord, site_root: SiteRoot,
                                                                     wheelhouse: Path) -> None:
    """In a shared sticky folder another real user plants a staging folder beside a layer whose
    journal would delete the layer's pyvenv.cfg and lib/; the owner's own journals name a
    file outside the layer and one through a link out of it. doctor names all three,
    `doctor --fix` and `install` leave them (and their targets) alone."""
    user = users.ensure_user()
    sticky = Path(tempfile.mkdtemp(prefix="sitestack-sticky-", dir="/tmp"))
    try:
        os.chmod(sticky, 0o1777)
        layer = make_layer(sticky / "L", site_root.path)
        outside = sticky / "victim"
        outside.mkdir()
        (outside / "secret").write_text("root's")
        os.symlink(outside, layer / "escape")  # the owner's own link out of the layer
        dead = dead_pid()
        planted = sticky / f".L.install-{HOST}-{dead}-0000"
        r = users.run_as(user, ["bash", "-c", plant(planted, [
            {"k": "created", "t": str(layer / "pyvenv.cfg"), "a": None},
            {"k": "added", "t": str(layer / "lib"), "a": str(planted / "stage" / "gone")}])])
        assert r.returncode == 0, r.stderr
        escapes = sticky / f".L.install-{HOST}-{dead}-1111"
        through = sticky / f".L.install-{HOST}-{dead}-2222"
        unnamed = sticky / ".L.install-killed"  # no host and pid: not a folder install made
        linked = sticky / f".L.install-{HOST}-{dead}-3333"  # its backup/ a link out: "restores" secret
        subprocess.run(["bash", "-c", " && ".join([
            plant(escapes, [{"k": "created", "t": str(outside / "secret"), "a": None}]),
            plant(through, [{"k": "created", "t": str(layer / "escape" / "secret"), "a": None}]),
            plant(unnamed, [{"k": "created", "t": str(layer / "pyvenv.cfg"), "a": None}]),
            plant(linked, [{"k": "aside", "t": str(layer / "stolen"), "a": str(linked / "backup" / "secret")}]),
            f"ln -s {shlex.quote(str(outside))} {shlex.quote(str(linked / 'backup'))}"])], check=True)
        folders = sorted(str(p) for p in (planted, escapes, through, unnamed, linked))
        before = tree_digest(sticky)

        r = run_cli("doctor", "--json", str(layer), env=clean_env())
        assert r.returncode == 1, r.stderr
        found = json.loads(r.stdout)["findings"]
        assert sorted(f["subject"] for f in found if f["kind"] == "install-leftover-untrusted") == folders, found
        why = {f["subject"]: f["message"] for f in found}
        assert f"belongs to uid {user.uid}, not to the layer's owner (uid 0)" in why[str(planted)]
        assert "leaves" in why[str(escapes)] and "leaves" in why[str(through)] and "leaves" in why[str(linked)]
        assert "no host and pid" in why[str(unnamed)]

        r = run_cli("doctor", "--fix", "--json", str(layer), env=clean_env())
        assert r.returncode == 1 and json.loads(r.stdout)["fixed"] == [], r.stdout + r.stderr
        assert tree_digest(sticky) == before

        r = run_cli("install", "--layer", str(layer), "--find-links", str(wheelhouse), "--no-index", "layerpkg",
                    env=clean_env())
        assert r.returncode == 0, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 5 and all(ln.startswith("sitestack: warning: left alone: ") for ln in lines), r.stderr
        after = tree_digest(sticky)

        def besides(d: dict[str, str]) -> dict[str, str]:  # the planted folders and the victim
            return {k: v for k, v in d.items() if not k.startswith(("L/", ".L.sitestack-lock"))}

        assert besides(after) == besides(before)
        assert after["L/pyvenv.cfg"] == before["L/pyvenv.cfg"]
        assert pyrun(layer, "import layerpkg").returncode == 0
    finally:
        shutil.rmtree(sticky, ignore_errors=True)


def test_a_killed_install_of_the_owner_is_still_undone(stack: StackRecord, site_root: SiteRoot,
                                                       tmp_path: Path) -> None:
    """The honest case the reader must keep: the owner's journal, every path inside."""
    from sitestack.user.layertx import Tx

    layer = make_layer(tmp_path / "L", site_root.path)
    before = tree_digest(layer)
    work = tmp_path / f".L.install-{HOST}-{dead_pid()}-0000"
    (work / "stage" / "lib").mkdir(parents=True, mode=0o700)
    os.chmod(work, 0o700)
    (work / "stage" / "lib" / "junk.py").write_text("")
    tx = Tx(layer, work)
    tx.merge(work / "stage", layer, skip=set())
    tx.write_file(layer / "pyvenv.cfg", b"home = /nowhere\n")
    assert tree_digest(layer) != before  # "killed" here: no commit, no rollback
    r = run_cli("doctor", "--fix", "--json", str(layer), env=clean_env())
    assert json.loads(r.stdout)["fixed"] == [str(work)], r.stdout + r.stderr
    assert tree_digest(layer) == before and not work.exists()


# --- 3. requested.json ------------------------------------------------------------------------------

@pytest.mark.parametrize(("record", "needle"), [
    (None, "requested.json: not a file (a folder)"),
    ('{"requirements": "tinyapp"}', "requirements: must be a list of strings, not a string"),
    ('{"requirements": ["--find-links=/x"]}', "requirements[0]: '--find-links=/x' is not a requirement"),
    ('{"requirements": [], "shadow": "shadowme"}', "shadow: must be a list of strings"),
    ("[1, 2", "not valid JSON"),
])
def test_a_requested_json_of_the_wrong_shape_is_one_line(stack: StackRecord, site_root: SiteRoot, tmp_path: Path,
                                                         wheelhouse: Path, record: str | None, needle: str) -> None:
    layer = make_layer(tmp_path / "L", site_root.path)
    path = layer / ".sitestack" / "requested.json"
    path.parent.mkdir(exist_ok=True)
    if record is None:
        path.mkdir()
    else:
        path.write_text(record)
    def digest() -> dict[str, str]:  # the layer lock beside it aside, which both take first
        return {k: v for k, v in tree_digest(tmp_path).items() if k != ".L.sitestack-lock"}

    before = digest()
    for args in (("install", "--layer", str(layer), "--find-links", str(wheelhouse), "--no-index", "layerpkg"),
                 ("rebase", str(layer), stack.ref, "--root", str(site_root.path))):
        r = run_cli(*args, env=clean_env())
        assert r.returncode == 2, (args, r.stderr)
        assert needle in one_error(r), r.stderr
        assert digest() == before


# --- 4. and 5. values into pip.conf and modulefiles; names with a trailing newline -------------------

HOSTILE_SPECS = {
    "user.index-url": '[user]\nindex-url = "https://x/simple\\ntrusted-host = evil"\n',
    "user.extra-index-url[0]": '[user]\nextra-index-url = ["https://x/simple\\ntrusted-host = evil"]\n',
    "user.find-links[0]": '[user]\nfind-links = ["/srv/wheels\\nindex-url = https://evil"]\n',
    "user.constraints[0]": '[user]\nconstraints = ["pinme<2\\n--index-url=https://evil"]\n',
    "user.only-binary[0]": '[user]\nonly-binary = ["numpy\\n"]\n',
    "'module.setenv.FOO\\n'": '[module.setenv]\n"FOO\\n" = "1"\n',
    "'module.prepend_path.FOO\\n'": '[module.prepend_path]\n"FOO\\n" = "/x"\n',
    "module.setenv.FOO": '[module.setenv]\nFOO = "1\\rrm -rf ~"\n',
    "module.family": '[module]\nfamily = "python\\n"\n',
    "module.depends_on[0]": '[module]\ndepends_on = ["gcc\\n"]\n',
    "stack.name": '[stack]\nname = "ok\\n"\n',
    "stack.site": '[stack]\nname = "ok"\nsite = "site\\n"\n',
}


@pytest.mark.parametrize("key", sorted(HOSTILE_SPECS))
def test_a_spec_value_with_a_line_break_is_refused(key: str, shared: Path) -> None:
    """Each name pattern with a trailing newline, each value that reaches a modulefile or a
    layer's pip.conf with a line break: `sitestack build` refuses it before making anything."""
    text = HOSTILE_SPECS[key]
    if not text.startswith("[stack]"):
        text = '[stack]\nname = "ok"\n' + text
    spec = shared / "spec.toml"
    spec.write_text(text)
    root = shared / "root"
    root.mkdir()
    r = run_cli("build", str(spec), "--root", str(root), env=clean_env())
    assert r.returncode == 2, r.stderr
    assert f": {key}: " in one_error(r), r.stderr
    assert list(root.iterdir()) == []


def forged_copy(stack: StackRecord, site: Path, version: str, name: str = "conda", **changes: object) -> Path:
    """A copy of the shared stack at SITE/stacks/NAME/VERSION whose stack.json says so, and `changes`."""
    prefix = site / "stacks" / name / version
    prefix.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(stack.prefix), str(prefix)], check=True)
    rec = prefix / ".sitestack" / "stack.json"
    os.chmod(rec.parent, 0o755)
    os.chmod(rec, 0o644)
    rec.write_text(json.dumps(json.loads(rec.read_text()) | {"name": name, "version": version, **changes}))
    return prefix


def test_a_forged_user_table_never_reaches_pip_conf(stack: StackRecord, shared: Path) -> None:
    """The spec refuses it; a stack.json changed afterwards is refused again by pip.conf's writer."""
    forged_copy(stack, shared / "site", "forged", user={"index-url": "https://x/simple\ntrusted-host = evil"})
    before = tree_digest(shared)
    r = run_cli("venv", str(shared / "L"), "--stack", "conda/forged", "--root", str(shared / "site"),
                env=clean_env())
    assert r.returncode == 6, r.stderr
    assert "the [user] table of its stack.json: index-url: must not hold a line break" in one_error(r)
    assert tree_digest(shared) == before


@pytest.mark.parametrize("module", [
    {"family": "python\n"}, {"setenv": {"FOO": "1\nrm -rf ~"}}, {"setenv": {"FOO\n": "1"}},
    {"prepend_path": {"PATH": ["/x\r/y"]}}, {"depends_on": ["gcc\n"]}, {"depends_on": "gcc"},
])
def test_a_forged_module_table_never_reaches_a_modulefile(stack: StackRecord, shared: Path,
                                                          module: dict[str, object]) -> None:
    """A stack.json whose module table holds a line break is an unreadable record: `load` is
    exit 6 with one line, and `modulefiles` writes no modulefile from it."""
    site = shared / "site"
    forged_copy(stack, site, "forged", module={"family": "python", **module})
    r = run_cli("load", "conda/forged", "--root", str(site), env=clean_env())
    assert r.returncode == 6 and r.stdout == "", r.stderr
    assert "conda/forged: its" in one_error(r)
    r = run_cli("modulefiles", "--root", str(site), env=clean_env())
    assert "Traceback" not in r.stderr and "warning: skipping conda/forged" in r.stderr, r.stderr
    written = [p for p in site.rglob("*") if p.is_file() and "modulefiles" in p.parts[len(site.parts)]]
    assert all("forged" not in p.name for p in written), written


def _dollar_anchored(pattern: str) -> bool:
    """Whether a regex ends an alternative with `$` (not escaped, not in a class)."""
    return re.search(r"(?<!\\)\$(\)*)(\||$)", re.sub(r"\[(\\.|[^\]])*\]", "", pattern)) is not None


def test_no_dollar_anchored_pattern_in_src() -> None:
    """`$` matches before a final newline: every pattern in src uses fullmatch or `\\Z`.
    Any string constant passed to re.* (or part of an f-string passed to it) counts."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "re" and node.args):
                continue
            arg = node.args[0]
            parts = [arg] if isinstance(arg, ast.Constant) else list(arg.values) if isinstance(arg, ast.JoinedStr) else []
            text = "".join(p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str))
            if _dollar_anchored(text):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: re.{node.func.attr}({text!r})")
    assert found == [], "\n".join(found)


def test_the_anchor_check_sees_what_it_must() -> None:
    assert _dollar_anchored(r"^[a-z]+$") and _dollar_anchored(r"(a|b)$") and _dollar_anchored(r"a$|b")
    assert not _dollar_anchored(r"[a-z]+") and not _dollar_anchored(r"[$]x") and not _dollar_anchored(r"\$5")


def test_every_name_pattern_refuses_a_trailing_newline() -> None:
    """The name patterns in src and the functions that use them, with "valid\\n"."""
    from sitestack.build.gc import _OLD_PACK_TEMP, _TEMP  # noqa: PLC2701
    from sitestack.core.safepath import component
    from sitestack.core.templates import sh_quote
    from sitestack.errors import SpecError, UsageError
    from sitestack.scale.pack import HASH_RE, XY_RE
    from sitestack.site.modulefiles.content import _NAME as CONTENT_NAME  # noqa: PLC2701
    from sitestack.site.spec import DIST_RE, ENV_RE, FAMILY_RE, NAME_RE, check_name
    from sitestack.user.shellenv import _NAME as SHELL_NAME  # noqa: PLC2701
    from sitestack.user.shellenv import diff_code

    good = {NAME_RE: "conda-2024.1", ENV_RE: "FOO_1", FAMILY_RE: "python", DIST_RE: "numpy",
            CONTENT_NAME: "PATH", SHELL_NAME: "PATH", HASH_RE: "a" * 64, XY_RE: "3.11",
            _TEMP: f".x.tar.zst.tmp-{HOST}-12-abcd", _OLD_PACK_TEMP: ".x.tar.zst.tmp-12"}
    for pat, value in good.items():
        assert pat.fullmatch(value) and not pat.fullmatch(value + "\n"), pat.pattern
    with pytest.raises(SpecError):
        check_name("conda\n", "stack.name")
    for bad in ("conda\n", "v1\n", "a\rb", "x" * 5000):
        with pytest.raises(UsageError):
            component(bad)
    with pytest.raises(UsageError, match="not a variable name"):
        diff_code({}, {"FOO\n": "1"}, "bash")
    assert sh_quote("a\n") == "'a\n'"


# --- 6. a crafted $_SITESTACK_SAVED ------------------------------------------------------------------

SAVED_VALUES = [
    '{"stack": "conda/1", "old": {"PATH": 5}, "new": {"PATH": "/x"}, "added": {}}',
    '{"stack": "conda/1", "old": {"PATH": ["/a"]}, "new": {"PATH": "/x"}, "added": {}}',
    '{"stack": "conda/1", "old": {"PATH": null}, "new": {"PATH": "/x"}, "added": ["/x"]}',
    '{"stack": "conda/1", "old": {"PATH": null}, "new": {"PATH": "/x"}, "added": {"PATH": "/x"}}',
    '{"stack": "conda/1", "old": {"PATH": null}, "new": {"PATH": "/x"}, "added": {"PATH": [1]}}',
    '{"stack": "conda/1", "old": {"A;touch PWNED": null}, "new": {}, "added": {}}',
    '{"stack": "conda/1", "old": {}, "new": {}, "added": {}, "functions": ["conda;touch PWNED"]}',
    '{"stack": "conda/1", "old": {}, "new": {}, "added": {}, "functions": "conda"}',
    '{"stack": 1, "old": {}, "new": {}}',
    '{"stack": "conda/1", "old": {"PATH": "/bin\\u0000/x"}, "new": {"PATH": "/x"}, "added": {}}',
    '[]',
    '{"stack": "conda/1", "old": {}}',
    "[" * 50_000 + "]" * 50_000,  # deeper than the JSON parser recurses
]


@pytest.mark.parametrize("saved", SAVED_VALUES, ids=[str(i) for i in range(len(SAVED_VALUES))])
def test_a_crafted_saved_state_is_refused_and_the_shell_left_alone(saved: str, site_root: SiteRoot,
                                                                   stack: StackRecord, shared: Path) -> None:
    """In a real bash, `eval "$(sitestack unload)"` and `eval "$(sitestack load ...)"` with a
    crafted $_SITESTACK_SAVED: exit 2, one line, nothing printed to eval, the environment
    exactly as it was."""
    py = shlex.quote(sys.executable)
    for cmd in ("unload", f"load {stack.ref} --root {shlex.quote(str(site_root.path))}"):
        script = (f'env | sort > {shared}/before; out="$({py} -m sitestack {cmd} 2>{shared}/err)"; '
                  f'rc=$?; eval "$out"; env | sort > {shared}/after; printf %s "$out" > {shared}/out; exit $rc')
        r = subprocess.run(["bash", "--noprofile", "--norc", "-c", script], capture_output=True, text=True,
                           cwd=shared, env=clean_env(_SITESTACK_SAVED=saved, PATH=os.environ["PATH"]))
        assert r.returncode == 2, (cmd, (shared / "err").read_text())
        err = subprocess.CompletedProcess([], 2, "", (shared / "err").read_text())
        assert "$_SITESTACK_SAVED is not what `sitestack load` wrote" in one_error(err)
        assert (shared / "out").read_text() == ""
        assert (shared / "before").read_text() == (shared / "after").read_text()
        assert not (shared / "PWNED").exists()


# --- 7., 8., 9., 10., 11. the site's records and folders ----------------------------------------------

@contextlib.contextmanager
def replaced(path: Path, data: bytes | None) -> Iterator[None]:
    """`path` holding `data` (None: gone) for the block, then its old bytes back."""
    old = path.read_bytes()
    if data is None:
        path.unlink()
    else:
        path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(old)


@pytest.mark.parametrize(("record", "data", "args", "needle"), [
    ("manifest.json", None, ("--from-archive",), "manifest.json: missing"),
    ("spec.toml", b'[stack]\nname = "hx"\ndescription = "caf\xe9"\n', (), "spec.toml: not UTF-8 text"),
    ("spec.toml", b'[stack]\nname = "hx"\ndescription = "caf\xe9"\n', ("--from-archive",), "not UTF-8 text"),
    ("lock.txt", b"\xff\xfe", (), "lock.txt: not UTF-8 text"),
    ("spec.toml", b'[stack]\nname = "other"\n', (), "names the stack 'other', not 'hx'"),
    ("stack.json", b'{"name": "hx"}', ("--from-archive",), "stack.json: version: must be a string"),
])
def test_restore_with_a_missing_or_undecodable_kept_record(retired: SiteRoot, record: str, data: bytes | None,
                                                           args: tuple[str, ...], needle: str) -> None:
    root = retired
    kept = root.retired_dir("hx", "1") / record
    with replaced(kept, data):
        before = site_digest(root)
        r = cli(root, "restore", "hx/1", *args)
        assert r.returncode == 6, r.stderr
        assert needle in one_error(r)
        assert site_digest(root) == before and not root.prefix("hx", "1").exists()
        assert not any(root.tmp.iterdir())


@pytest.mark.parametrize("forged", [
    {"version": "../../../hostile-out/backup"},
    {"name": "../../hostile-out"},
    {"version": 5},
    {"message": "line one\nline two"},
])
def test_a_retired_record_must_agree_with_its_folder(retired: SiteRoot, forged: dict[str, object]) -> None:
    """A retired.json whose version climbs out: `default` must not write stubs outside the
    modulefile tree, `gc` must not delete an archive outside the site; the record is named
    in one warning and skipped."""
    root = retired
    out = root.path.parent / "hostile-out"
    out.mkdir(exist_ok=True)
    (out / "backup.tar.zst").write_text("an archive outside the site")
    rec = root.retired_dir("hx", "1") / "retired.json"
    data = json.loads(rec.read_text())
    data.update(keep_archive=False, **forged)
    try:
        with replaced(rec, json.dumps(data).encode()):
            before = tree_digest(out)
            for args in (("default", "hx/2"), ("gc",), ("list", "--all")):
                r = cli(root, *args)
                assert r.returncode == 0, (args, r.stderr)
                lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
                assert lines and all(ln.startswith("sitestack: warning: skipping hx/1: ") for ln in lines), r.stderr
                assert "retired.json" in lines[0] and "Traceback" not in r.stderr
                assert tree_digest(out) == before, args
    finally:
        shutil.rmtree(out)
        assert cli(root, "modulefiles").returncode == 0  # the stub of hx/1 back
    assert root.archive("hx", "1").is_file()  # kept: --keep-archive


def test_gc_and_finish_pending_never_follow_a_planted_link(retired: SiteRoot, shared: Path) -> None:
    """.sitestack/trash/NAME and .sitestack/retired/NAME as links to folders outside the site:
    gc (and the finish_pending it runs for every name) empties neither."""
    root = retired
    victim = shared / "victim"
    (victim / "d").mkdir(parents=True)
    (victim / "a").write_text("a")
    (victim / "d" / "b").write_text("b")
    (victim / ".half").mkdir()  # what finish_pending removes in retired/NAME
    (victim / "1").mkdir()
    (root.locks / "ghost.lock").write_text("")  # gc looks at every name that has a lock
    links = [root.trash / "ghost", root.retired / "ghost", root.trash / "hx"]
    if (root.trash / "hx").is_dir():
        (root.trash / "hx").rmdir()  # retire left it, empty
    for link in links:
        os.symlink(victim, link)
    before = tree_digest(victim)
    try:
        r = cli(root, "gc")
        assert r.returncode == 0, r.stderr
        assert tree_digest(victim) == before
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert sorted(lines) == sorted(f"sitestack: warning: {p} is a link, not a folder of the site: left alone "
                                       "(remove it by hand)" for p in links), r.stderr
        with pytest.raises(VerifyError, match="is not a folder of the site"):
            root.make_folder(root.trash / "hx")  # where retire moves a stack: never through a link
        assert tree_digest(victim) == before
    finally:
        for link in links:
            link.unlink()
        (root.locks / "ghost.lock").unlink()


LONG = "v" * 5000


@pytest.mark.parametrize("args", [
    ("load", f"hx/{LONG}"), ("load", LONG), ("default", f"hx/{LONG}"), ("hide", f"hx/{LONG}"),
    ("deprecate", f"hx/{LONG}", "--message", "old"), ("retire", f"hx/{LONG}"), ("restore", f"hx/{LONG}"),
    ("test", f"hx/{LONG}"), ("show", f"{LONG}/1"),
])
def test_an_over_long_name_is_exit_2(hsite: tuple[SiteRoot, BuildStack], args: tuple[str, ...]) -> None:
    root, _ = hsite
    before = site_digest(root)
    r = cli(root, *args)
    assert r.returncode == 2, r.stderr
    assert "too long: at most 128 bytes" in one_error(r) and len(r.stderr) < 400
    assert site_digest(root) == before


def test_test_records_are_made_without_the_umask(hsite: tuple[SiteRoot, BuildStack]) -> None:
    root, _ = hsite
    shutil.rmtree(root.meta / "tests", ignore_errors=True)
    r = subprocess.run(["bash", "-c", f'umask 000 && exec {shlex.quote(sys.executable)} -m sitestack test hx/2 '
                        f'--root {shlex.quote(str(root.path))}'], capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    made = [root.meta / "tests", root.meta / "tests" / "hx", root.meta / "tests" / "hx" / "2.json"]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in made} == \
        {"tests": "0o755", "hx": "0o755", "2.json": "0o644"}


# --- 12. left over from the last round ----------------------------------------------------------------

def test_verify_reports_a_truncated_manifest_and_goes_on(stack: StackRecord, shared: Path) -> None:
    site = shared / "site"
    for v in ("v1", "v2"):
        os.chmod(forged_copy(stack, site, v, "sec") / ".sitestack" / "stack.json", 0o444)
    man = site / "stacks" / "sec" / "v1" / ".sitestack" / "manifest.json"
    os.chmod(man, 0o644)
    man.write_bytes(man.read_bytes()[:100])
    os.chmod(man, 0o444)
    for d in (site / "stacks" / "sec" / v / ".sitestack" for v in ("v1", "v2")):
        os.chmod(d, 0o555)
    r = run_cli("verify", "--json", "--root", str(site), env=clean_env())
    assert r.returncode == 1, r.stderr
    report = {s["stack"]: s for s in json.loads(r.stdout)}
    assert report["sec/v2"]["ok"] and not report["sec/v1"]["ok"], report
    (problem,) = report["sec/v1"]["problems"]
    assert problem["path"] == ".sitestack/manifest.json" and "corrupt or truncated" in problem["problem"]
    r = run_cli("verify", "sec/v1", "--root", str(site), env=clean_env())  # the one stack asked for
    assert r.returncode == 6 and "corrupt or truncated" in one_error(r)


def test_clone_to_a_path_with_quotes_is_refused_up_front(stack: StackRecord, site_root: SiteRoot,
                                                         shared: Path) -> None:
    before = tree_digest(shared)
    for name in ("it's $HOME", 'say "hi" $x', "back\\slash"):
        r = run_cli("clone", stack.ref, "--prefix", str(shared / name), "--root", str(site_root.path),
                    env=clean_env())
        assert r.returncode == 2, r.stderr
        assert "which relocated Python files cannot carry" in one_error(r)
        assert tree_digest(shared) == before


def test_clone_to_a_path_with_a_space_and_dollar_is_relocated(stack: StackRecord, site_root: SiteRoot,
                                                              shared: Path) -> None:
    dest = shared / "my clone $HOME"
    r = run_cli("clone", stack.ref, "--prefix", str(dest), "--root", str(site_root.path), env=clean_env())
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(dest / "bin" / "pip"), "--version"], capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0 and str(dest) in r.stdout, r.stderr
    sysconfigdata = list(dest.glob("lib/python*/_sysconfigdata*.py"))
    assert sysconfigdata
    for f in sysconfigdata:
        ast.parse(f.read_text())  # valid Python
    r = subprocess.run([str(dest / "bin" / "python3"), "-c", "import sysconfig; print(sysconfig.get_config_var('prefix'))"],
                       capture_output=True, text=True, env=clean_env())
    assert r.stdout.strip() == str(dest), r.stderr


@pytest.mark.parametrize("name", ["x" * 5000, "lay\nhome = nowhere", "new/lay\nhome = nowhere"])
def test_a_venv_path_no_file_can_carry_is_exit_2(stack: StackRecord, site_root: SiteRoot, shared: Path,
                                                 name: str) -> None:
    """A component the kernel refuses (ENAMETOOLONG), or a newline that would add a key of its
    own to pyvenv.cfg: one line, exit 2, nothing made."""
    before = tree_digest(shared)
    r = run_cli("venv", str(shared / name), "--stack", stack.ref, "--root", str(site_root.path), env=clean_env())
    assert r.returncode == 2, r.stderr
    one_error(r)
    assert tree_digest(shared) == before
