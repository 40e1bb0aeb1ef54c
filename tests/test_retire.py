"""retire / restore / gc, and doctor on a retired stack: real builds in this module's own site
root, real Lmod and Environment Modules for the stub, kill -9 at named points of each command.

The tests of the main flow run in file order on one root (retire -> list -> gc -> restore);
each crash test gets its own version of a second stack name, so they do not depend on each other.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sitestack.build import pkgcache
from sitestack.core.fsutil import CRASH_ENV, shared_lock
from sitestack.core.layout import SiteRoot
from sitestack.site.registry import Site
from tests.conftest import BuildStack, make_builder, run_cli
from tests.helpers import modules
from tests.helpers.modules import run_module_script

SYSTEMS = pytest.mark.parametrize("system", modules.MODULE_SYSTEMS)
TODAY = _dt.date.today().isoformat()
MSG = "use rt/2"


@pytest.fixture(scope="module")
def site(workdir: Path, wheelhouse: Path) -> tuple[SiteRoot, BuildStack]:
    root = SiteRoot(workdir / "site-retire")
    root.path.mkdir()
    b = make_builder(root, wheelhouse)
    b("rt", "1", ["shadowme==1.0", "tinyapp"], imports=["shadowme", "tinyapp"], commands=["tinyapp"])
    b("rt", "2", ["shadowme==2.0"], default=True, imports=["shadowme"])
    return root, b


def cli(root: SiteRoot, *args: str, check: bool = True, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--root", str(root.path), check=check, env=env)


def modulepath(root: SiteRoot, system: str) -> Path:
    return root.lmod_dir if system == "lmod" else root.tcl_dir


def one_line(text: str) -> str:
    return " ".join(text.split())  # Lmod wraps its messages at 80 columns


def cache_bytes(root: SiteRoot) -> int:
    base = pkgcache.cache_root(root)
    return sum(os.lstat(os.path.join(d, f)).st_blocks * 512 for d, _ds, fs in os.walk(base) for f in fs)


def snapshot(root: SiteRoot) -> dict[str, object]:
    """What a refused command must leave alone."""
    def tree(p: Path) -> list[str]:
        return sorted(str(x.relative_to(p)) for x in p.rglob("*")) if p.is_dir() else []
    return {"state": root.state_file.read_bytes() if root.state_file.exists() else b"",
            "stacks": tree(root.stacks), "lmod": {p.name: p.read_text() for p in (root.lmod_dir / "rt").iterdir()},
            "retired": tree(root.retired), "archives": tree(root.path / "archives")}


# --- the main flow -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def retired(site: tuple[SiteRoot, BuildStack]) -> SiteRoot:
    """rt/1 published as an archive, a layer and a thin clone made on it, then retired with
    --keep-archive."""
    root, _ = site
    cli(root, "pack", "rt/1", "--publish")
    note = root.checked("rt", "1")  # pack's note of checked files (none if all were new)
    if not note.exists():
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_bytes(b"")
    cli(root, "venv", str(root.path.parent / "rt-layer"), "--stack", "rt/1")
    cli(root, "clone", "rt/1", "--prefix", str(root.path.parent / "rt-clone"), "--mode", "thin")
    prefix = root.prefix("rt", "1")
    r = cli(root, "retire", "rt/1", "--message", MSG, "--keep-archive")
    assert f"retired rt/1 on {TODAY}: {MSG}" in r.stdout
    assert not prefix.exists() and not any(root.trash.rglob("stack"))
    return root


def test_retire_keeps_records(retired: SiteRoot) -> None:
    kept = retired.retired_dir("rt", "1")
    names = {p.name for p in kept.iterdir()}
    assert {"spec.toml", "lock.txt", "manifest.json", "build.log", "tests.json", "stack.json",
            "retired.json"} <= names
    info = json.loads((kept / "retired.json").read_text())
    assert info["retired"] == TODAY and info["message"] == MSG and info["keep_archive"] is True
    assert "shadowme==1.0" in (kept / "lock.txt").read_text()
    assert retired.archive("rt", "1").is_file()  # --keep-archive
    assert not retired.checked("rt", "1").exists()  # about files that are gone
    assert Site(retired).versions("rt")[0].version == "2"


@SYSTEMS
def test_stub_fails_load_and_is_hidden(system: str, retired: SiteRoot) -> None:
    mp = modulepath(retired, system)
    r = run_module_script(system, f'module use "{mp}"\nmodule load rt/1\n', timeout=120)
    out = one_line(r.stdout + r.stderr)
    assert r.returncode != 0 and f"rt/1 was retired on {TODAY}: {MSG}" in out, out
    r = run_module_script(system, f'module use "{mp}"\nmodule avail rt 2>&1\n', timeout=120)
    assert r.returncode == 0 and "rt/2" in r.stdout and "rt/1" not in r.stdout, r.stdout + r.stderr
    # the default still loads
    r = run_module_script(system, f'module use "{mp}"\nmodule load rt\necho "STACK=$SITESTACK_STACK"\n',
                          timeout=120)
    assert r.returncode == 0 and "STACK=rt/2" in r.stdout, r.stdout + r.stderr


def test_list_all_shows_retired(retired: SiteRoot) -> None:
    plain = json.loads(cli(retired, "list", "--json").stdout)
    assert [x["version"] for x in plain] == ["2"]
    assert plain[0]["status"] == "published" and plain[0]["retired"] is None and plain[0]["message"] is None
    rows = json.loads(cli(retired, "list", "--all", "--json").stdout)
    gone = [x for x in rows if x["status"] == "retired"]
    assert [(x["version"], x["retired"], x["message"]) for x in gone] == [("1", TODAY, MSG)]
    # Every row has the same keys: a retired one is read from its kept stack.json.
    (live,) = [x for x in rows if x["status"] == "published"]
    assert set(gone[0]) == set(live)
    kept = json.loads((retired.retired_dir("rt", "1") / "stack.json").read_text())
    assert gone[0]["python"] == kept["python"] and gone[0]["python"].startswith("3.")
    assert gone[0]["packages"] == len(kept["packages"]) and gone[0]["files"] == kept["files"] > 0
    assert gone[0]["prefix"] == str(retired.prefix("rt", "1")) and gone[0]["kind"] == "pypi"
    assert gone[0]["default"] is False and gone[0]["hidden"] is False and gone[0]["disk_bytes"] == 0
    text = cli(retired, "list", "--all").stdout
    assert f"rt/1  retired on {TODAY}: {MSG}" in text and "rt/1" not in cli(retired, "list").stdout


def test_doctor_names_retired_layer(retired: SiteRoot, wheelhouse: Path) -> None:
    layer = retired.path.parent / "rt-layer"
    r = run_cli("doctor", str(layer), "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    f = json.loads(r.stdout)["findings"]
    assert f[0]["kind"] == "stack-retired"
    assert f"retired on {TODAY}: {MSG}" in f[0]["message"]
    assert f[0]["fix"] == f"sitestack rebase {layer} rt/2 --allow-missing-stack"
    # The fix works as given.
    fix = f[0]["fix"].split()[1:] + ["--find-links", str(wheelhouse), "--no-index"]
    run_cli(*fix, check=True)
    assert run_cli("doctor", str(layer)).returncode == 0


def test_doctor_names_clone_of_retired_stack(retired: SiteRoot) -> None:
    clone = retired.path.parent / "rt-clone"
    r = run_cli("doctor", str(clone), "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    (f,) = json.loads(r.stdout)["findings"]
    assert f["kind"] == "stack-retired" and f"retired on {TODAY}: {MSG}" in f["message"]
    assert "thin clone" in f["message"]
    assert f["fix"] == f"sitestack --root {retired.path} clone rt/2 --prefix {clone}.new"
    run_cli(*f["fix"].split()[1:], check=True)
    assert run_cli("doctor", f"{clone}.new").returncode == 0


def test_gc_frees_unused_cache_entries(retired: SiteRoot) -> None:
    root = retired
    junk = root.tmp / "rt-9-killedrun"  # a killed build's temp folder
    (junk / "bin").mkdir(parents=True)
    (junk / "bin" / "x").write_bytes(b"x" * 100_000)
    orphan = root.path / "archives" / "rt" / "7.tar.zst"  # an archive of a version that is gone
    orphan.write_bytes(b"\0" * 50_000)
    orphan_image = orphan.with_name("7.sqfs")  # and its `pack --publish --format squashfs` image
    orphan_image.write_bytes(b"\0" * 50_000)
    entries = {p.name.split("-")[0] + "-" + p.name.split("-")[1] for p in pkgcache.entries(root)}
    assert {"shadowme-1.0", "shadowme-2.0", "tinyapp-1.0"} <= entries
    before = cache_bytes(root)
    # The site's uv cache hardlinks the wheels the entries were installed from: an entry's
    # bytes are only freed when the uv cache lets go of them too.
    (uv_cache,) = pkgcache.uv_caches(root)
    tiny = next(p for p in pkgcache.entries(root) if p.name.startswith("tinyapp-1.0-"))
    tiny_inodes = {(st.st_dev, st.st_ino) for st in map(os.lstat, pkgcache.entry_files(tiny))}
    cached_inodes = {(st.st_dev, st.st_ino) for st in (os.lstat(os.path.join(d, f))
                                                     for d, _ds, fs in os.walk(uv_cache) for f in fs)}
    assert tiny_inodes & cached_inodes, "the entry's files are linked from the uv cache"
    dry = json.loads(cli(root, "gc", "--dry-run", "--json").stdout)
    assert cache_bytes(root) == before and junk.is_dir() and orphan.is_file()
    res = json.loads(cli(root, "gc", "--json").stdout)
    assert [r["path"] for r in res["removed"]] == [r["path"] for r in dry["removed"]]
    gone = {Path(r["path"]).name for r in res["removed"]}
    assert any(n.startswith("shadowme-1.0-") for n in gone) and any(n.startswith("tinyapp-1.0-") for n in gone)
    assert junk.name in gone and orphan.name in gone and orphan_image.name in gone
    assert retired.archive("rt", "1").is_file()  # kept on purpose by --keep-archive
    left = {p.name.rsplit("-", 1)[0] for p in pkgcache.entries(root)}
    assert any(n.startswith("shadowme-2.0") for n in left) and not any(n.startswith("tinyapp") for n in left)
    after = cache_bytes(root)
    freed = sum(r["bytes"] for r in res["removed"] if r["kind"] == "cache-entry")
    assert after < before and freed > 0
    assert not junk.exists() and not orphan.exists()
    (uv_dry,) = [r for r in dry["removed"] if r["kind"] == "uv-cache"]
    (uv_real,) = [r for r in res["removed"] if r["kind"] == "uv-cache"]
    assert uv_dry["path"] == uv_real["path"] == str(uv_cache) and not uv_cache.exists()
    # What the uv cache held for the removed entries counts, in the dry run as well.
    assert uv_real["bytes"] > 0 and uv_dry["bytes"] == uv_real["bytes"]
    assert dry["bytes_freed"] == res["bytes_freed"]
    assert cli(root, "verify").returncode == 0
    # nothing more to do
    again = json.loads(cli(root, "gc", "--json").stdout)
    assert again["removed"] == [] and again["bytes_freed"] == 0
    text = cli(root, "gc", "--dry-run").stdout
    assert "would free" in text and "(0 item(s))" in text


def test_restore_from_archive_then_from_lock(retired: SiteRoot) -> None:
    root = retired
    kept_lock = root.retired_dir("rt", "1").joinpath("lock.txt").read_text()
    r = json.loads(cli(root, "restore", "rt/1", "--from-archive", "--json").stdout)
    assert r["from"] == "archive" and r["same_lock"] is True
    prefix = root.prefix("rt", "1")
    assert (prefix / ".sitestack" / "lock.txt").read_text() == kept_lock
    assert not root.retired_dir("rt", "1").exists()
    assert "LmodError" not in (root.lmod_dir / "rt" / "1.lua").read_text()
    assert cli(root, "verify").returncode == 0
    assert not os.stat(prefix / "bin").st_mode & 0o222  # read-only like any build
    # retire again (the archive goes this time) and rebuild from the kept spec and lock
    cli(root, "retire", "rt/1", "-m", MSG)
    assert not root.archive("rt", "1").exists()
    r = json.loads(cli(root, "restore", "rt/1", "--json").stdout)
    assert r["from"] == "lock" and r["same_lock"] is True
    assert (prefix / ".sitestack" / "lock.txt").read_text() == kept_lock
    assert subprocess.run([str(prefix / "bin" / "tinyapp")], capture_output=True, text=True).stdout == "tinyapp 1.0\n"
    assert cli(root, "verify").returncode == 0
    for system in modules.MODULE_SYSTEMS:
        if not modules.available(system):
            continue
        out = run_module_script(system, f'module use "{modulepath(root, system)}"\nmodule load rt/1\n'
                                        'python -c "import shadowme; print(shadowme.__version__)"\n')
        assert out.returncode == 0 and out.stdout.strip().endswith("1.0"), out.stdout + out.stderr


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "needle"), [
    (["retire", "rt/2"], "first run `sitestack default rt/1`"),
    (["retire", "rt/9"], "no stack rt/9"),
    (["retire", "nope/1"], "no stack"),
    (["retire", "rt"], "give NAME/VERSION"),
    (["retire", "rt/.."], "is not NAME/VERSION"),
    (["retire", "a/b/c"], "is not NAME or NAME/VERSION"),
    (["retire", "rt/1", "-m", "two\nlines"], "must be one line"),
    (["restore", "rt/1"], "is published"),
    (["restore", "rt/9"], "was never retired"),
    (["restore", "rt"], "give NAME/VERSION"),
    (["restore", "rt/../x"], "is not NAME or NAME/VERSION"),
])
def test_bad_input_exit_2(site: tuple[SiteRoot, BuildStack], args: list[str], needle: str) -> None:
    root, _ = site
    assert root.prefix("rt", "1").is_dir(), "runs after the restore test"
    before = snapshot(root)
    r = cli(root, *args, check=False)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("sitestack: error: ")
    assert snapshot(root) == before


def test_retire_twice_and_restore_without_archive(site: tuple[SiteRoot, BuildStack]) -> None:
    root, b = site
    b("rt", "3", ["shadowme==2.0"])
    cli(root, "retire", "rt/3", "-m", "gone")
    before = snapshot(root)
    r = cli(root, "retire", "rt/3", check=False)
    assert r.returncode == 2 and "rt/3 is already retired" in r.stderr and "gone" in r.stderr, r.stderr
    r = cli(root, "restore", "rt/3", "--from-archive", check=False)
    assert r.returncode == 2 and "has no kept archive" in r.stderr, r.stderr
    r = cli(root, "default", "rt/3", check=False)
    assert r.returncode == 2 and f"rt/3 was retired on {TODAY}: gone" in r.stderr, r.stderr
    assert snapshot(root) == before


# --- gc and a build at the same time ----------------------------------------------------------------

def test_gc_waits_for_a_build_linking(site: tuple[SiteRoot, BuildStack]) -> None:
    root, _ = site
    with shared_lock(pkgcache.use_lock(root)):  # what a build holds while it links
        p = subprocess.Popen([sys.executable, "-m", "sitestack", "gc", "--root", str(root.path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            p.wait(timeout=3)
            raise AssertionError("gc ran while a build held the cache's use-lock")
        except subprocess.TimeoutExpired:
            pass
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err


# --- kill -9 ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crash_site(workdir: Path, wheelhouse: Path) -> tuple[SiteRoot, BuildStack]:
    root = SiteRoot(workdir / "site-retire-crash")
    root.path.mkdir()
    b = make_builder(root, wheelhouse)
    b("cr", "base", ["shadowme==2.0"], default=True, imports=["shadowme"])
    return root, b


def crash(root: SiteRoot, where: str, *args: str) -> None:
    r = cli(root, *args, check=False, env={**os.environ, CRASH_ENV: where})
    assert r.returncode == -9, (where, r.returncode, r.stderr)


def default_loads(root: SiteRoot) -> None:
    for system in modules.MODULE_SYSTEMS:
        if modules.available(system):
            r = run_module_script(system, f'module use "{modulepath(root, system)}"\nmodule load cr\n'
                                          'python -c "import shadowme"\necho "S=$SITESTACK_STACK"\n')
            assert r.returncode == 0 and "S=cr/base" in r.stdout, r.stdout + r.stderr


def published(root: SiteRoot, version: str) -> bool:
    return any(r.version == version for r in Site(root).versions("cr"))


def retired_ok(root: SiteRoot, version: str) -> bool:
    return Site(root).retired_record("cr", version) is not None


@pytest.mark.parametrize(("where", "done"), [
    ("retire:after-records", False),
    ("retire:after-rename", True),
    ("retire:after-modulefiles", True),
    ("retire:before-delete", True),
])
def test_kill_during_retire(crash_site: tuple[SiteRoot, BuildStack], where: str, done: bool) -> None:
    root, b = crash_site
    v = where.split(":")[1]
    b("cr", v, ["shadowme==1.0"])
    crash(root, where, "retire", f"cr/{v}", "-m", "bye")
    # either fully published or fully retired, records kept, default loadable
    assert published(root, v) is not done and retired_ok(root, v) is done
    if not done:
        assert cli(root, "verify", f"cr/{v}").returncode == 0
    else:
        assert {"lock.txt", "spec.toml", "manifest.json"} <= {p.name for p in root.retired_dir("cr", v).iterdir()}
    default_loads(root)
    # a rerun completes it
    r = cli(root, "retire", f"cr/{v}", "-m", "bye")
    assert r.returncode == 0 and f"cr/{v}" in r.stdout
    assert retired_ok(root, v) and not root.prefix("cr", v).exists()
    assert not any((root.trash / "cr").iterdir())
    assert "LmodError" in (root.lmod_dir / "cr" / f"{v}.lua").read_text()
    assert f'hide_version("cr/{v}")' in (root.lmod_dir / "cr" / ".modulerc.lua").read_text()
    assert cli(root, "verify").returncode == 0


@pytest.mark.parametrize("where", ["restore:after-unpack", "restore:after-publish"])
def test_kill_during_restore(crash_site: tuple[SiteRoot, BuildStack], where: str) -> None:
    root, b = crash_site
    v = where.split(":")[1]
    b("cr", v, ["shadowme==1.0"])
    cli(root, "pack", f"cr/{v}", "--publish")
    cli(root, "retire", f"cr/{v}", "--keep-archive")
    crash(root, where, "restore", f"cr/{v}", "--from-archive")
    default_loads(root)
    if where == "restore:after-unpack":
        assert retired_ok(root, v) and not published(root, v)
        assert list(root.tmp.glob(f"cr-{v}-*"))  # left by the kill, never visible
        cli(root, "restore", f"cr/{v}", "--from-archive")
        assert not list(root.tmp.glob(f"cr-{v}-*"))
    else:
        assert published(root, v) and not retired_ok(root, v)
        assert root.retired_dir("cr", v).is_dir()  # stale, ignored, dropped by the next gc
        r = cli(root, "restore", f"cr/{v}", check=False)
        assert r.returncode == 2 and "is published" in r.stderr
        cli(root, "gc")
        assert not root.retired_dir("cr", v).exists()
    assert published(root, v)
    assert "LmodError" not in (root.lmod_dir / "cr" / f"{v}.lua").read_text()
    assert cli(root, "verify").returncode == 0


def test_kill_during_gc(crash_site: tuple[SiteRoot, BuildStack]) -> None:
    root, b = crash_site
    b("cr", "gcvictim", ["shadowme==1.0", "tinyapp"])
    cli(root, "retire", "cr/gcvictim")
    crash(root, "gc:after-rename", "gc")
    half = [p for p in pkgcache.cache_root(root).iterdir() if p.name.startswith(pkgcache.GC_PREFIX)]
    assert half  # one entry taken out of the cache by a rename, not deleted
    assert cli(root, "verify").returncode == 0
    default_loads(root)
    # A build needing that distribution again installs it anew; it never links the .gc- folder.
    b("cr", "again", ["shadowme==1.0", "tinyapp"], imports=["tinyapp"], commands=["tinyapp"])
    assert cli(root, "verify", "cr/again").returncode == 0
    cli(root, "gc")
    assert not [p for p in pkgcache.cache_root(root).iterdir() if p.name.startswith(".")]
    assert cli(root, "verify").returncode == 0


# --- gc: temps of killed packs and clones -----------------------------------------------------------

def kill_when(proc: subprocess.Popen[bytes], folder: Path, *, timeout: float = 120) -> Path | None:
    """SIGKILL `proc` as soon as a temp carrying its pid shows up in `folder`; that temp, or
    None when the command finished first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        found = [p for p in folder.iterdir() if f"-{proc.pid}-" in p.name] if folder.is_dir() else []
        if found:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return found[0]
        time.sleep(0.01)
    proc.wait()
    return None


def killed_temp(root: SiteRoot, folder: Path, *args: str) -> Path:
    for _attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-m", "sitestack", *args, "--root", str(root.path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        temp = kill_when(proc, folder)
        if temp is not None:
            assert proc.returncode == -9 and os.path.lexists(temp)
            return temp
    raise AssertionError(f"{args} always finished before it could be killed")


def test_gc_removes_temps_of_killed_packs_and_clones(crash_site: tuple[SiteRoot, BuildStack]) -> None:
    from sitestack.core.publish import HOST

    root, _ = crash_site
    archives = root.path / "archives" / "cr"
    pack_temp = killed_temp(root, archives, "pack", "cr/base", "--publish", "--level", "19")
    clones = root.path / "clones"
    clones.mkdir(exist_ok=True)
    clone_temp = killed_temp(root, clones, "clone", "cr/base", "--prefix", str(clones / "c1"), "--mode", "copy")
    assert clone_temp.name.startswith(f".c1.clone-{HOST}-") and clone_temp.is_dir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    keep = [archives / f".base.tar.zst.tmp-{HOST}-{os.getpid()}-abcd1234",  # a pack running now
            archives / f".base.tar.zst.tmp-otherhost-{dead.pid}-abcd1234"]  # another host's
    for k in keep:
        k.write_bytes(b"\0" * 1000)
    old_style = archives / f".base.tar.zst.tmp-{dead.pid}"  # from before temps carried a host
    old_style.write_bytes(b"\0" * 1000)
    dry = json.loads(cli(root, "gc", "--dry-run", "--json").stdout)
    temps = {r["path"]: r["bytes"] for r in dry["removed"] if r["kind"] == "temp"}
    assert {str(pack_temp), str(clone_temp), str(old_style)} <= set(temps), dry
    assert not {str(k) for k in keep} & set(temps)
    assert temps[str(clone_temp)] > 0 and pack_temp.exists() and clone_temp.exists()
    res = json.loads(cli(root, "gc", "--json").stdout)
    assert {str(pack_temp), str(clone_temp), str(old_style)} <= {r["path"] for r in res["removed"]}
    assert not os.path.lexists(pack_temp) and not os.path.lexists(clone_temp) and not old_style.exists()
    assert all(k.exists() for k in keep)
    for k in keep:
        k.unlink()
    assert cli(root, "verify").returncode == 0
    default_loads(root)


# --- kill -9 after a random delay (not at a named point) -------------------------------------------

def invariants(root: SiteRoot, versions: list[str]) -> None:
    """Each version fully published (and verifying) or fully retired with its records kept;
    the default loads under the real module systems."""
    for v in versions:
        pub, ret = published(root, v), retired_ok(root, v)
        assert pub != ret, (v, pub, ret)
        if pub:
            assert cli(root, "verify", f"cr/{v}").returncode == 0
        else:
            assert {"lock.txt", "spec.toml", "manifest.json", "retired.json"} <= \
                {p.name for p in root.retired_dir("cr", v).iterdir()}
    default_loads(root)


def timed_run(root: SiteRoot, *args: str) -> float:
    t0 = time.monotonic()
    cli(root, *args)
    return time.monotonic() - t0


def killed_after(root: SiteRoot, delay: float, *args: str) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "sitestack", *args, "--root", str(root.path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def test_random_kill_during_retire(crash_site: tuple[SiteRoot, BuildStack]) -> None:
    root, b = crash_site
    rng = random.Random(int(os.environ.get("SITESTACK_TEST_SEED", "0")) or None)
    b("cr", "rk-t", ["shadowme==1.0"])
    whole = timed_run(root, "retire", "cr/rk-t", "-m", "bye")  # how long one takes, start-up included
    killed, versions = 0, []
    for i in range(4):
        v = f"rk-{i}"
        b("cr", v, ["shadowme==1.0"])
        versions.append(v)
        delay = rng.uniform(0.3, 1.0) * whole
        rc = killed_after(root, delay, "retire", f"cr/{v}", "-m", "bye")
        killed += rc == -9
        invariants(root, versions)
        r = cli(root, "retire", f"cr/{v}", "-m", "bye", check=False)  # finishes what the kill left
        assert r.returncode == 0 or (r.returncode == 2 and "is already retired" in r.stderr), r.stderr
        assert retired_ok(root, v) and not root.prefix("cr", v).exists(), (v, delay)
        assert "LmodError" in (root.lmod_dir / "cr" / f"{v}.lua").read_text()
    assert killed, f"no run was killed before it finished (one took {whole:.2f}s)"
    assert not any((root.trash / "cr").iterdir())
    assert cli(root, "verify").returncode == 0


def test_random_kill_during_gc(crash_site: tuple[SiteRoot, BuildStack]) -> None:
    root, b = crash_site
    rng = random.Random(int(os.environ.get("SITESTACK_TEST_SEED", "0")) or None)
    cli(root, "gc")
    killed, versions = 0, []
    for i in range(4):
        v = f"gk-{i}"
        # Each round's build needs the entries the previous round's gc was killed removing:
        # a half-removed entry must never be linked.
        b("cr", v, ["shadowme==1.0", "tinyapp"], imports=["shadowme", "tinyapp"], commands=["tinyapp"])
        versions.append(v)
        invariants(root, versions)
        cli(root, "retire", f"cr/{v}")
        whole = timed_run(root, "gc", "--dry-run")
        delay = rng.uniform(0.3, 1.2) * whole
        rc = killed_after(root, delay, "gc")
        killed += rc == -9
        invariants(root, versions)
    assert killed, "no gc was killed before it finished"
    cli(root, "gc")
    assert not [p for p in pkgcache.cache_root(root).iterdir() if p.name.startswith(".")]
    assert not [p for p in root.tmp.iterdir() if p.name.startswith(".")] if root.tmp.is_dir() else True
    assert cli(root, "verify").returncode == 0
    default_loads(root)
