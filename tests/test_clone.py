"""`sitestack clone`: every mode, as root and as an unprivileged user, on ext4 and XFS.

Nothing is mocked: real clones of real stacks, real pip from the wheelhouse, a real
unprivileged user (setpriv), a real loop-mounted XFS with reflink, real Lmod and Tcl.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sitestack
from sitestack.core.layout import SiteRoot
from sitestack.core.manifest import Manifest, verify, walk
from sitestack.core.records import StackRecord
from tests.conftest import make_builder, run_cli
from tests.helpers import modules, users
from tests.helpers.env import clean_env
from tests.helpers.stacks import PY_XY

PTH_CMD = (
    'P="$(python -c "import sys; print(sys.prefix)")"; '
    'SP="$(python -c "import sysconfig; print(sysconfig.get_paths()[\\"purelib\\"])")"; '
    'mkdir -p "$P/extra" && echo "WHERE = 1" > "$P/extra/pthmod.py" && '
    'echo "$P/extra" > "$SP/zz_clone_test.pth"'
)


def stack_unchanged(rec: StackRecord) -> None:
    problems = verify(rec.prefix, Manifest.load(rec.records / "manifest.json"), check_mode=True)
    assert problems == [], problems


def clone_json(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    r = run_cli("clone", *args, "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def console_scripts(prefix: Path) -> list[Path]:
    out = []
    for p in sorted((prefix / "bin").iterdir()):
        if p.is_file() and not p.is_symlink() and p.name != "activate":
            with open(p, "rb") as f:
                if f.read(2) == b"#!":
                    out.append(p)
    return out


def check_clone(clone: Path, rec: StackRecord, wheelhouse: Path, *, run: object = None) -> None:
    """sys.prefix, every script in bin/, then pip install/uninstall; the stack never changes."""
    runner = run or (lambda argv, **kw: subprocess.run(argv, capture_output=True, text=True, env=clean_env(), **kw))
    py = str(clone / "bin" / f"python{rec.python_xy}")
    r = runner([py, "-c", "import sys, sysconfig; print(sys.prefix); print(sysconfig.get_config_var('prefix'))"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(clone), str(clone)]
    scripts = console_scripts(clone)
    assert {"pip", "tinyapp"} <= {p.name for p in scripts}
    for script in scripts:
        first = script.read_bytes().split(b"\n", 2)
        assert str(rec.prefix).encode() not in first[0] + first[1], script
        r = runner([str(script), "--version" if script.name.startswith("pip") else "--prefix"])
        assert r.returncode == 0, (script, r.stderr)
    assert not (clone / "pip.conf").exists()
    assert not (clone / ".sitestack" / "manifest.json").exists()
    assert json.loads((clone / ".sitestack" / "clone.json").read_text())["source"] == rec.ref
    pip = [py, "-m", "pip", "--disable-pip-version-check"]
    r = runner([*pip, "install", "--no-index", "--find-links", str(wheelhouse), "shadowme==2.0", "userpkg"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = runner([str(clone / "bin" / "userpkg-hello")])
    assert r.returncode == 0 and r.stdout.strip() == "userpkg 1.0", r.stderr
    r = runner([*pip, "uninstall", "-y", "basepkg", "onlyold"])
    assert r.returncode == 0, r.stderr
    r = runner([py, "-c", "import shadowme, importlib.util as u; print(shadowme.__version__, shadowme.__file__,"
                " u.find_spec('basepkg'))"])
    version, path, basepkg = r.stdout.split()
    assert (version, basepkg) == ("2.0", "None")
    assert path.startswith(str(clone) + "/")
    stack_unchanged(rec)
    r = subprocess.run([str(rec.python_exe), "-s", "-c", "import shadowme, basepkg; print(shadowme.__version__)"],
                       capture_output=True, text=True, env=clean_env())
    assert r.stdout.strip() == "1.0", r.stderr


@pytest.fixture(scope="session")
def pth_stack(build_stack: object) -> StackRecord:
    """A stack whose site-packages holds a .pth naming its prefix (written before relocation)."""
    return build_stack("clonepth", "1", ["tinyapp", "shadowme==1.0", "basepkg==1.0"],  # type: ignore[operator]
                       commands=[PTH_CMD])


# --- root -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["hardlink", "copy", "thin", "auto"])
def test_clone_each_mode_as_root(mode: str, stack: StackRecord, site_root: SiteRoot, workdir: Path,
                                 wheelhouse: Path) -> None:
    dest = workdir / f"root-clone-{mode}"
    data = clone_json(stack.ref, "--root", str(site_root.path), "--prefix", str(dest), "--mode", mode)
    assert data["mode"] == ("hardlink" if mode == "auto" else mode)  # ext4, same fs, root owns all
    manifest = Manifest.load(stack.records / "manifest.json")
    files, links, _dirs = walk(dest, exclude=(".sitestack",))
    # Every file and link of the stack but pip.conf, plus bin/activate.
    assert len(files) + len(links) == len(manifest.files) + len(manifest.symlinks) - 1 + 1
    assert data["files"] + data["symlinks"] == len(manifest.files) + len(manifest.symlinks) - 1
    stack_unchanged(stack)
    probe = f"lib/python{PY_XY}/site-packages/shadowme/__init__.py"
    a, b = os.lstat(stack.prefix / probe), os.lstat(dest / probe)
    if mode == "thin":
        assert os.readlink(dest / probe) == str(stack.prefix / probe)
        assert not (dest / f"bin/python{PY_XY}").is_symlink()  # CPython needs a real executable
    elif data["mode"] == "hardlink":
        assert a.st_ino == b.st_ino
    else:
        assert a.st_ino != b.st_ino and b.st_mode & 0o200
        assert a.st_mtime_ns == b.st_mtime_ns  # keeps .pyc valid
    check_clone(dest, stack, wheelhouse)


def test_relocates_shebangs_and_pth(pth_stack: StackRecord, site_root: SiteRoot, workdir: Path) -> None:
    # A path long enough that a plain '#!' line would pass the kernel's 127-byte limit.
    dest = workdir / ("long-" + "x" * 120) / "pth-clone"
    data = clone_json(pth_stack.ref, "--root", str(site_root.path), "--prefix", str(dest), "--mode", "copy")
    pth = f"lib/python{PY_XY}/site-packages/zz_clone_test.pth"
    assert pth in data["relocated"]
    assert (dest / pth).read_text().strip() == f"{dest}/extra"
    assert (pth_stack.prefix / pth).read_text().strip() == f"{pth_stack.prefix}/extra"
    r = subprocess.run([str(dest / "bin/python3"), "-c", "import pthmod; print(pthmod.__file__)"],
                       capture_output=True, text=True, env=clean_env())
    assert r.stdout.strip() == f"{dest}/extra/pthmod.py", r.stderr
    tinyapp = (dest / "bin/tinyapp").read_bytes()
    assert tinyapp.startswith(b"#!/bin/sh\n") and str(dest).encode() in tinyapp  # the sh trick
    r = subprocess.run([str(dest / "bin/tinyapp")], capture_output=True, text=True, env=clean_env())
    assert r.stdout.strip() == "tinyapp 1.0", r.stderr
    stack_unchanged(pth_stack)


def test_existing_prefix_refused_unless_force(stack: StackRecord, site_root: SiteRoot, workdir: Path) -> None:
    root = ["--root", str(site_root.path)]
    other = workdir / "not-a-clone"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    r = run_cli("clone", stack.ref, *root, "--prefix", str(other), "--force")
    assert r.returncode == 5 and "not a sitestack clone" in r.stderr
    assert (other / "keep.txt").read_text() == "mine"
    dest = workdir / "forced"
    clone_json(stack.ref, *root, "--prefix", str(dest), "--mode", "thin")
    r = run_cli("clone", stack.ref, *root, "--prefix", str(dest), "--mode", "copy")
    assert r.returncode == 5 and "already exists" in r.stderr
    assert clone_json(stack.ref, *root, "--prefix", str(dest), "--mode", "copy", "--force")["mode"] == "copy"
    assert not (dest / f"lib/python{PY_XY}/os.py").is_symlink()
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".forced.")) == []


def test_summary_line_and_loaded_stack(stack: StackRecord, workdir: Path) -> None:
    env = dict(os.environ, SITESTACK_PREFIX=str(stack.prefix), SITESTACK_ROOT="/nonexistent")
    r = run_cli("clone", "--prefix", str(workdir / "from-loaded"), "--mode", "copy", env=env)
    assert r.returncode == 0, r.stderr
    line = r.stdout.splitlines()[0]
    assert line.startswith(f"cloned {stack.ref} to {workdir / 'from-loaded'}: mode copy, {stack.files - 1} files, ")
    assert " bytes (" in line and line.endswith(" s")
    env.pop("SITESTACK_PREFIX")
    r = run_cli("clone", "--prefix", str(workdir / "from-nothing"), env=env)
    assert r.returncode == 2 and "SITESTACK_PREFIX" in r.stderr
    assert not (workdir / "from-nothing").exists()


def test_activate_and_deactivate(stack: StackRecord, site_root: SiteRoot, workdir: Path,
                                 wheelhouse: Path) -> None:
    dest = workdir / "activate-clone"
    data = clone_json(stack.ref, "--root", str(site_root.path), "--prefix", str(dest), "--mode", "thin")
    home = Path(tempfile.mkdtemp(dir=workdir))
    snap = modules.env_snapshot_script()
    script = (f"{snap}\nsource {dest}/bin/activate\n{snap}\n"
              f"python -m pip install -q --user --no-index --find-links {wheelhouse} userpkg\n"
              "userpkg-hello\npython -c 'import sys; print(sys.prefix)'\n"
              f"deactivate\n{snap}\n")
    for before_ub in ("/stack/user/base", None):
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        if before_ub:
            env["PYTHONUSERBASE"] = before_ub
        r = subprocess.run(["bash", "--noprofile", "--norc", "-e", "-c", script], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        before, active, after = modules.parse_snapshots(r.stdout)
        assert after == before
        ub = str(home / data["user_base"].removeprefix("$HOME/"))  # type: ignore[union-attr]
        assert active["PYTHONUSERBASE"] == ub != before_ub
        assert active["PATH"] == f"{ub}/bin:{dest}/bin:/usr/bin:/bin"
        assert "userpkg 1.0" in r.stdout and str(dest) in r.stdout
        assert list(Path(ub).glob(f"lib/python{PY_XY}/site-packages/userpkg/__init__.py"))
    stack_unchanged(stack)


@pytest.mark.parametrize("system", modules.MODULE_SYSTEMS)
def test_personal_modulefile(system: str, stack: StackRecord, site_root: SiteRoot, workdir: Path) -> None:
    dest = workdir / f"modclone-{system}"
    mdir = workdir / f"privatemodules-{system}"
    data = clone_json(stack.ref, "--root", str(site_root.path), "--prefix", str(dest), "--mode", "thin",
                      "--module", "myconda", "--module-dir", str(mdir))
    assert sorted(p.name for p in mdir.iterdir()) == ["myconda", "myconda.lua"]
    assert data["modulefiles"] == [str(mdir / "myconda.lua"), str(mdir / "myconda")]
    snap = modules.env_snapshot_script()
    r = modules.run_module_script(system, f"module use {mdir}\n{snap}\nmodule load myconda\n{snap}\n"
                                  "python3 -c 'import sys; print(\"PREFIX=\" + sys.prefix)'\n"
                                  f"module unload myconda\n{snap}\n")
    assert r.returncode == 0, r.stderr
    before, loaded, after = (modules.strip_module_internals(s) for s in modules.parse_snapshots(r.stdout))
    assert after == before
    assert loaded["SITESTACK_CLONE"] == str(dest)
    assert loaded["PYTHONUSERBASE"].endswith(data["user_base"].removeprefix("$HOME"))  # type: ignore[union-attr]
    assert loaded["PATH"].split(":")[:2] == [loaded["PYTHONUSERBASE"] + "/bin", f"{dest}/bin"]
    assert f"PREFIX={dest}\n" in r.stdout
    r = run_cli("clone", stack.ref, "--root", str(site_root.path), "--prefix", str(workdir / "modclone-x"),
                "--module", "myconda", "--module-dir", str(mdir))
    assert r.returncode == 5 and "modulefile" in r.stderr and not (workdir / "modclone-x").exists()


# --- an unprivileged user ---------------------------------------------------------------

@dataclass(frozen=True)
class UserCli:
    user: users.TestUser
    argv: list[str]
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return users.run_as(self.user, [*self.argv, *args], env=self.env, timeout=300)


@pytest.fixture(scope="module")
def user_cli(workdir: Path) -> Iterator[UserCli]:
    """The user runs sitestack from a world-readable copy of the package with Debian's python.

    sitestack is installed under /root/.pyenv (mode 700). `clone` needs only the standard
    library when --root is given and stderr is not a TTY, so the package folder is enough.
    """
    user = users.ensure_user()
    src = Path(tempfile.mkdtemp(prefix="sitestack-src-", dir=workdir))
    shutil.copytree(Path(sitestack.__file__).parent, src / "sitestack",
                    ignore=shutil.ignore_patterns("__pycache__"))
    users.share_with_users(src)
    yield UserCli(user, [users.debian_python(), "-m", "sitestack"], {"PYTHONPATH": str(src)})
    shutil.rmtree(src)


@pytest.mark.parametrize("mode", ["auto", "copy", "thin", "hardlink", "reflink"])
def test_clone_each_mode_as_user(mode: str, user_cli: UserCli, stack: StackRecord,
                                 site_root: SiteRoot, wheelhouse: Path) -> None:
    user = user_cli.user
    home = users.make_user_dir(user)
    try:
        dest = home / f"clone-{mode}"
        r = user_cli.run("clone", stack.ref, "--root", str(site_root.path), "--prefix", str(dest),
                         "--mode", mode, "--json")
        if mode in ("hardlink", "reflink"):
            # ext4, root's read-only files, fs.protected_hardlinks=1: refused before anything is written.
            assert r.returncode == 2, r.stdout + r.stderr
            want = "protected_hardlinks" if mode == "hardlink" else "copy-on-write"
            assert want in r.stderr and "--mode auto" in r.stderr
            assert list(home.iterdir()) == []  # no clone, no temp folder
            return
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["mode"] == ("copy" if mode == "auto" else mode)
        if mode == "auto":
            assert any("protected_hardlinks" in why for why in data["fallback"]), data["fallback"]
        assert os.stat(dest / f"lib/python{PY_XY}/site-packages").st_uid == user.uid
        check_clone(dest, stack, wheelhouse,
                    run=lambda argv, **kw: users.run_as(user, argv, env={"PYTHONNOUSERSITE": "1"}))
    finally:
        shutil.rmtree(home)


@pytest.fixture(scope="module")
def unreadable_stack(build_stack: object) -> Iterator[StackRecord]:
    """A stack of our own with one file the test user cannot read (a mid-clone failure)."""
    rec: StackRecord = build_stack("cloneunreadable", "1", ["basepkg==1.0"])  # type: ignore[operator]
    secret = rec.site_packages / "basepkg" / "__init__.py"
    os.chmod(secret, 0o400)
    yield rec
    os.chmod(secret, 0o444)


def test_failure_midway_leaves_nothing(user_cli: UserCli, unreadable_stack: StackRecord,
                                       site_root: SiteRoot) -> None:
    home = users.make_user_dir(user_cli.user)
    try:
        r = user_cli.run("clone", unreadable_stack.ref, "--root", str(site_root.path), "--prefix",
                         str(home / "half"), "--mode", "copy")
        assert r.returncode == 5, r.stdout + r.stderr
        assert r.stderr.startswith("sitestack: error: ") and "Permission denied" in r.stderr
        assert list(home.iterdir()) == []
    finally:
        shutil.rmtree(home)


# --- reflink on a real XFS --------------------------------------------------------------

@pytest.fixture(scope="module")
def xfs(workdir: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("reflink test: mounting a loop XFS needs root")
    if not shutil.which("mkfs.xfs"):
        pytest.skip("reflink test: mkfs.xfs not installed (apt-get install xfsprogs)")
    if not Path("/dev/loop-control").exists():
        pytest.skip("reflink test: no loop devices (/dev/loop-control missing) in this container")
    image = workdir / "xfs.img"
    mnt = workdir / "xfs"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(1 << 30)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    r = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"reflink test: cannot loop-mount an XFS image here: {r.stderr.strip()}")
    os.chmod(mnt, 0o755)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        image.unlink()


def _used(path: Path) -> int:
    os.sync()
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@pytest.fixture(scope="module")
def xfs_stack(xfs: Path, wheelhouse: Path) -> tuple[SiteRoot, StackRecord]:
    root = SiteRoot(xfs / "site")
    root.path.mkdir()
    rec = make_builder(root, wheelhouse)("conda", "2022-07-19",
                                         ["shadowme==1.0", "tinyapp", "basepkg==1.0", "onlyold"])
    return root, rec


@pytest.mark.parametrize("mode", ["reflink", "auto"])
def test_reflink_on_xfs(mode: str, xfs: Path, xfs_stack: tuple[SiteRoot, StackRecord], wheelhouse: Path) -> None:
    root, rec = xfs_stack
    dest = xfs / f"clone-{mode}"
    before = _used(xfs)
    data = clone_json(rec.ref, "--root", str(root.path), "--prefix", str(dest), "--mode", mode)
    extra = _used(xfs) - before
    assert data["mode"] == "reflink"
    assert data["shared"] > 0.9 * data["files"]  # type: ignore[operator]
    # Extents are shared: the clone costs a small share of the stack's bytes on disk.
    assert extra < 0.25 * rec.bytes, (extra, rec.bytes)
    probe = f"lib/python{PY_XY}/site-packages/shadowme/__init__.py"
    assert os.stat(dest / probe).st_ino != os.stat(rec.prefix / probe).st_ino
    stack_unchanged(rec)
    check_clone(dest, rec, wheelhouse)


@pytest.mark.parametrize("sig", ["TERM", "KILL"])
def test_interrupted_clone_leaves_nothing_at_path(sig: str, stack: StackRecord, site_root: SiteRoot,
                                                  workdir: Path) -> None:
    import signal
    import sys
    import time

    parent = Path(tempfile.mkdtemp(dir=workdir))
    dest = parent / "interrupted"
    # PYTHONFAULTHANDLER: should it ever hang after the signal, SIGABRT makes it print where.
    proc = subprocess.Popen([sys.executable, "-m", "sitestack", "clone", stack.ref, "--root", str(site_root.path),
                             "--prefix", str(dest), "--mode", "copy", "--jobs", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    # Wait until the temp folder beside PATH holds the first copied files, then stop it.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        tmps = list(parent.glob(".interrupted.clone-*"))
        if tmps and (tmps[0] / f"lib/python{PY_XY}").is_dir() and any((tmps[0] / "bin").iterdir()):
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.skip("the clone finished before it could be interrupted")
    proc.send_signal(getattr(signal, f"SIG{sig}"))
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler dumps every thread's stack to stderr
        _out, err = proc.communicate(timeout=30)
        pytest.fail(f"the clone did not stop within 60 s of SIG{sig}; its threads:\n{err[-8000:]}")
    assert not os.path.lexists(dest)
    left = [p.name for p in parent.iterdir()]
    if sig == "TERM":
        assert proc.returncode == 130 and "interrupted" in err
        assert left == []  # cleaned up, like Ctrl-C
    else:
        assert proc.returncode == -9
        assert len(left) == 1 and left[0].startswith(".interrupted.clone-")  # only the temp folder
        # The next clone to that path removes the dead process's temp folder.
        r = subprocess.run([sys.executable, "-m", "sitestack", "clone", stack.ref, "--root", str(site_root.path),
                            "--prefix", str(dest), "--mode", "copy"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in parent.iterdir()) == ["interrupted"]
    stack_unchanged(stack)


# --- a conda stack: text and binary (padded) placeholders ---------------------------------

@pytest.fixture(scope="module")
def conda_clone_stack(workdir: Path, wheelhouse: Path, request: pytest.FixtureRequest) -> StackRecord:
    pytest.importorskip("rattler")
    from tests.helpers.condachannel import CONDA_PYTHON
    from tests.test_conda_stack import conda_spec

    channel: Path = request.getfixturevalue("conda_channel")
    root = SiteRoot(workdir / "site-conda-clone")
    root.path.mkdir()
    spec = workdir / "conda-clone.toml"
    spec.write_text(conda_spec(channel, wheelhouse, [CONDA_PYTHON, "pyhello", "binpfx", "textpfx"], ["tinyapp"]))
    run_cli("build", str(spec), "--root", str(root.path), "--version", "1", check=True)
    from sitestack.site.registry import Site

    return Site(root).get("cconda/1")


@pytest.mark.parametrize("mode", ["hardlink", "thin"])
def test_conda_stack_clone(mode: str, conda_clone_stack: StackRecord, workdir: Path) -> None:
    rec = conda_clone_stack
    dest = workdir / f"cc-{mode}"
    data = clone_json(rec.ref, "--root", str(rec.root), "--prefix", str(dest), "--mode", mode)
    assert "bin/binpfx" in data["relocated"] and data["binaries"] == []
    r = subprocess.run([str(dest / "bin/binpfx")], capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0 and str(dest) in r.stdout and str(rec.prefix) not in r.stdout, r.stdout
    assert str(dest) in (dest / "etc/textpfx.conf").read_text()
    r = subprocess.run([str(dest / f"bin/python{rec.python_xy}"), "-c", "import sys, pyhello; print(sys.prefix)"],
                       capture_output=True, text=True, env=clean_env())
    assert r.stdout.strip() == str(dest), r.stderr
    assert "CONDA_PREFIX=" in (dest / "bin/activate").read_text()
    stack_unchanged(rec)
    # conda binaries have room for a prefix as long as the placeholder, no more.
    too_long = workdir / ("y" * 150) / ("y" * 150) / "cc"
    r = run_cli("clone", rec.ref, "--root", str(rec.root), "--prefix", str(too_long))
    assert r.returncode == 2 and "shorter path" in r.stderr
    assert not too_long.parent.parent.exists()


def test_plan_from_manifest_json_is_the_manifests_tree(tmp_path: Path) -> None:
    """copytree.load_tree (the clone's fast plan) reads what Manifest.load reads, and a corrupt
    manifest is a VerifyError there too."""
    from sitestack.core.copytree import load_tree, tree_from_manifest
    from sitestack.core.manifest import FileEntry
    from sitestack.errors import VerifyError

    m = Manifest(files={"bin/python3.x": FileEntry("0" * 64, 5, 0o755), "pip.conf": FileEntry("1" * 64, 3, 0o644),
                        "lib/a.py": FileEntry("2" * 64, 0, 0o644), ".sitestack/x": FileEntry("3" * 64, 1, 0o444)},
                 symlinks={"bin/python": "python3.x", "pip.conf.link": "pip.conf"},
                 dirs=["lib", "bin", ".sitestack", "lib/sub"])
    path = tmp_path / "manifest.json"
    m.save(path)
    skip = (".sitestack", "pip.conf")
    assert load_tree(path, skip) == tree_from_manifest(Manifest.load(path)).without(skip)
    path.write_text(path.read_text()[:-40])
    with pytest.raises(VerifyError, match="corrupt or truncated"):
        load_tree(path, skip)


def test_plan_from_the_saved_tree_is_the_manifests_tree(tmp_path: Path, stack: StackRecord,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """build saves the tree beside the manifest (copytree.save_tree); load_tree takes it without
    parsing the JSON while it was made from that very manifest file, and reads the JSON again
    once the manifest is another file or the saved tree is unreadable."""
    import json

    from sitestack.core.copytree import load_tree, save_tree, tree_from_manifest
    from sitestack.core.manifest import FileEntry
    from sitestack.core.records import TREE

    skip = (".sitestack", "pip.conf")
    built = stack.records / "manifest.json"
    assert (stack.records / TREE).is_file()
    from_json = tree_from_manifest(Manifest.load(built)).without(skip)
    real_loads = json.loads

    def no_json(*_a: object, **_k: object) -> object:
        raise AssertionError("the manifest's JSON was parsed")

    with monkeypatch.context() as mp:
        mp.setattr(json, "loads", no_json)
        assert load_tree(built, skip) == from_json
    m = Manifest(files={"pip.conf": FileEntry("1" * 64, 3, 0o644), "lib/b.py": FileEntry("2" * 64, 7, 0o644),
                        "lib/a.py": FileEntry("3" * 64, 0, 0o644)},
                 symlinks={"bin/python": "python3.x"}, dirs=["lib", "bin"])
    path = tmp_path / "manifest.json"
    m.save(path)
    save_tree(tmp_path / TREE, path, m)
    whole = tree_from_manifest(Manifest.load(path))
    want = whole.without(skip)
    assert want.files == (("lib/a.py", 0), ("lib/b.py", 7))  # sorted, as the JSON is
    monkeypatch.setattr(json, "loads", no_json)
    assert load_tree(path, skip) == want and load_tree(path) == whole
    monkeypatch.setattr(json, "loads", real_loads)
    m.files["lib/c.py"] = FileEntry("4" * 64, 9, 0o644)
    m.save(path)  # another manifest file: the saved tree is stale
    assert ("lib/c.py", 9) in load_tree(path, skip).files
    (tmp_path / TREE).write_bytes(b"\x00garbage")
    assert load_tree(path, skip) == tree_from_manifest(Manifest.load(path)).without(skip)


def test_rewritten_sources_compiled_here_only_with_the_stacks_magic(tmp_path: Path) -> None:
    """In-process bytecode for the rewritten .py files only when the stack's own .pyc of them
    has this interpreter's magic number; otherwise the stack's interpreter compiles them."""
    import importlib.util
    import sys

    from sitestack.user.clone import _same_magic

    xy = f"{sys.version_info[0]}.{sys.version_info[1]}"
    pyc = tmp_path / "lib" / "__pycache__" / f"m.cpython-{xy.replace('.', '')}.pyc"
    pyc.parent.mkdir(parents=True)
    pyc.write_bytes(importlib.util.MAGIC_NUMBER + b"\0" * 12)
    assert _same_magic(tmp_path, ["lib/m.py"], xy)
    assert not _same_magic(tmp_path, ["lib/m.py"], "3.1")  # another interpreter: not here
    pyc.write_bytes(b"\x00\x00\r\n" + b"\0" * 12)
    assert not _same_magic(tmp_path, ["lib/m.py"], xy)
    assert not _same_magic(tmp_path, ["lib/other.py"], xy)  # no bytecode of it at all
