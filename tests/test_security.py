"""Issue 14, hostile input: every case is built for real (crafted tar.zst and squashfs
archives, FIFOs, an unprivileged user, a small tmpfs, real flock) and run through the CLI.

Archives are crafted consistent (a valid header whose content hash is that of its manifest)
except for the one thing each test breaks, so the check that refuses it is the one named.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sitestack.core.fsutil import rmtree
from sitestack.core.manifest import Manifest
from sitestack.core.records import StackRecord
from sitestack.scale.pack import META, content_hash
from tests.conftest import run_cli
from tests.helpers.archives import manifest_entry as _entry
from tests.helpers.archives import write_archive
from tests.helpers.cli import one_error
from tests.helpers.env import clean_env

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (tmpfs, test user)")


@pytest.fixture()
def scratch(workdir: Path) -> Iterator[Path]:
    d = workdir / f"sec-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    rmtree(d)


# --- crafting archives -----------------------------------------------------------------------

def _ti(name: str, data: bytes | None = None, *, link: str | None = None, kind: bytes = tarfile.REGTYPE,
        mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(name)
    ti.mode = mode
    if link is not None:
        ti.type, ti.linkname = tarfile.SYMTYPE, link
    elif kind == tarfile.DIRTYPE:
        ti.type = tarfile.DIRTYPE
    else:
        ti.size = len(data or b"")
    return ti, data


def forge(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], manifest: dict[str, Any],
          *, prefixes: dict[str, str] | None = None, hits: dict[str, list[dict[str, str]]] | None = None,
          header: dict[str, Any] | None = None, layer_manifest: dict[str, Any] | None = None) -> Path:
    """A tar.zst laid out as `pack` writes it; the header is consistent unless `header`
    overrides some of its fields."""
    prefixes = prefixes or {"stack": "/opt/orig/stack"}
    mans = {"stack": Manifest.from_json(manifest)}
    if "layer" in prefixes:
        mans["layer"] = Manifest.from_json(layer_manifest or {"files": {}, "symlinks": {}, "dirs": []})
    head = {"format": "sitestack-pack", "name": "evil", "version": "1", "kind": "stack",
            "python_xy": "3.11", "prefixes": prefixes,
            "content_hash": content_hash([(r, prefixes[r], json.dumps(mans[r].to_json()).encode())  # as written
                                          for r in ("stack", "layer") if r in mans]),
            "files": sum(len(m.files) for m in mans.values()),
            "bytes": sum(m.total_bytes for m in mans.values())}
    head.update(header or {})
    metas: list[tuple[str, object]] = [(f"{META}/header.json", head)]
    for role, m in mans.items():
        metas += [(f"{META}/{role}/manifest.json", m.to_json()),
                  (f"{META}/{role}/prefix-files.json",
                   {"prefix": prefixes[role], "files": (hits or {}).get(role, [])})]
    return write_archive(path, metas, members)


def stage_cli(archive: Path, to: Path, *extra: str, root: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = ["stage", *extra, "--archive", str(archive), "--to", str(to), "--no-mpi"]
    if root is not None:
        args += ["--root", str(root)]
    return run_cli(*args, env=clean_env())


def staged(to: Path) -> list[str]:
    base = to / "sitestack"
    return sorted(p.name for p in base.iterdir() if p.name != ".locks") if base.is_dir() else []


# --- 1. relocation lists stay inside the staged copy -------------------------------------------

def test_relocation_list_with_dotdot_is_refused(scratch: Path) -> None:
    victim = scratch / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("/opt/orig/stack is named here\n")
    data = b"#!/opt/orig/stack/bin/python3.11\n"
    a = forge(scratch / "a.tar.zst", [_ti("stack/bin", kind=tarfile.DIRTYPE), _ti("stack/bin/tool", data)],
              {"files": {"bin/tool": _entry(data)}, "symlinks": {}, "dirs": ["bin"]},
              hits={"stack": [{"path": "../../../../outside/victim.txt", "kind": "text"}]})
    to = scratch / "to" / "a" / "b"
    r = stage_cli(a, to)
    assert r.returncode == 6, r.stderr
    assert "path with '..'" in one_error(r)
    assert victim.read_text() == "/opt/orig/stack is named here\n"
    assert staged(to) == []


def test_relocation_through_a_link_to_a_declared_prefix_is_refused(scratch: Path) -> None:
    """The header declares a 'layer' prefix that is a real folder on this machine, and a
    stack link to it: relocating `l/victim.txt` would rewrite the real file."""
    real = scratch / "victimdir"
    real.mkdir()
    (real / "victim.txt").write_text(f"{real} stays\n")
    a = forge(scratch / "a.tar.zst", [_ti("stack/l", link=str(real))],
              {"files": {}, "symlinks": {"l": str(real)}, "dirs": []},
              prefixes={"stack": "/opt/orig/stack", "layer": str(real)},
              hits={"stack": [{"path": "l/victim.txt", "kind": "text"}]})
    r = stage_cli(a, scratch / "to")
    assert r.returncode == 6, r.stderr
    assert "relocation list names stack/l/victim.txt" in one_error(r)
    assert (real / "victim.txt").read_text() == f"{real} stays\n"
    assert staged(scratch / "to") == []


def test_relocate_map_refuses_a_path_through_a_link(tmp_path: Path) -> None:
    """The same rule in core.relocate, which layers, clones and rebase use too."""
    from sitestack.core.manifest import PrefixHit
    from sitestack.core.relocate import relocate_map
    from sitestack.errors import VerifyError

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "v.txt").write_text("/old/prefix\n")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(str(outside), root / "l")
    with pytest.raises(VerifyError, match="passes through the link"):
        relocate_map(root, {"/old/prefix": "/new"}, [PrefixHit("l/v.txt", "text")])
    with pytest.raises(VerifyError, match="'..'"):
        relocate_map(root, {"/old/prefix": "/new"}, [PrefixHit("../outside/v.txt", "text")])
    assert (outside / "v.txt").read_text() == "/old/prefix\n"


# --- 2. the content hash is recomputed -------------------------------------------------------------

def test_forged_header_of_a_real_stack_is_refused_and_never_reused(
        stack: StackRecord, stack_archive: Path, site_root, scratch: Path) -> None:
    from sitestack.scale.image import read_header

    _fmt, real = read_header(stack_archive)
    evil = b"print('forged')\n"
    a = forge(scratch / "forged.tar.zst", [_ti("stack/evil.py", evil)],
              {"files": {"evil.py": _entry(evil)}, "symlinks": {}, "dirs": []},
              prefixes={"stack": str(stack.prefix)},
              header={"name": real.name, "version": real.version, "content_hash": real.content_hash})
    to = scratch / "to"
    r = stage_cli(a, to)
    assert r.returncode == 6, r.stderr
    assert "archive content does not match its header" in one_error(r)
    assert staged(to) == []
    r = run_cli("stage", stack.ref, "--to", str(to), "--no-mpi", "--json", "--root", str(site_root.path),
                env=clean_env())
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["status"] == "staged" and res["id"] == real.dirname
    assert not (Path(res["path"]) / "stack" / "evil.py").exists()
    marker = json.loads((Path(res["path"]) / ".sitestack-stage" / "verified.json").read_text())
    assert marker["content_hash"] == real.content_hash


def test_copy_with_another_recorded_hash_is_not_reused(stack: StackRecord, stack_archive: Path,
                                                       scratch: Path) -> None:
    from sitestack.scale.image import read_header

    _fmt, real = read_header(stack_archive)
    fake = scratch / "to" / "sitestack" / real.dirname
    (fake / ".sitestack-stage").mkdir(parents=True)
    # Same first 12 hex (the folder name), another full hash: not this stack.
    (fake / ".sitestack-stage" / "verified.json").write_text(
        json.dumps({"content_hash": real.content_hash[:12] + "0" * 52}))
    r = stage_cli(stack_archive, scratch / "to", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "staged", r.stderr
    marker = json.loads((fake / ".sitestack-stage" / "verified.json").read_text())
    assert marker["content_hash"] == real.content_hash and (fake / "stack" / "bin").is_dir()


# --- 3. link chains --------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["l1 first", "l2 first"])
def test_link_chain_escaping_through_an_earlier_link_is_refused(scratch: Path, order: str) -> None:
    l1 = _ti("stack/a/b/c/l1", link="../../..")  # -> stack
    l2 = _ti("stack/a/b/c/l2", link="l1/../../../../outside")  # lexically stack/outside
    dirs = [_ti(f"stack/{d}", kind=tarfile.DIRTYPE) for d in ("a", "a/b", "a/b/c")]
    links = [l1, l2] if order == "l1 first" else [l2, l1]
    a = forge(scratch / "a.tar.zst", [*dirs, *links],
              {"files": {}, "symlinks": {"a/b/c/l1": "../../..", "a/b/c/l2": "l1/../../../../outside"},
               "dirs": ["a", "a/b", "a/b/c"]})
    r = stage_cli(a, scratch / "to")
    assert r.returncode == 6, r.stderr
    assert "symlink stack/a/b/c/l2 -> l1/../../../../outside points outside" in one_error(r)
    assert staged(scratch / "to") == []


def test_absolute_link_with_dotdot_after_a_prefix_is_refused(scratch: Path) -> None:
    target = "/opt/orig/stack/../../../etc/passwd"
    a = forge(scratch / "a.tar.zst", [_ti("stack/p", link=target)],
              {"files": {}, "symlinks": {"p": target}, "dirs": []})
    r = stage_cli(a, scratch / "to")
    assert r.returncode == 6 and "points outside" in one_error(r), r.stderr


def _image_tree(scratch: Path) -> Path:
    """The skeleton of a staged copy (what an image holds), for a hostile image to add to."""
    tree = scratch / "tree"
    for d in ("stack/bin", ".sitestack-stage"):
        (tree / d).mkdir(parents=True)
    (tree / "activate").write_text("true\n")
    return tree


EVIL = "evil-1-0123456789ab"


@pytest.mark.skipif(not shutil.which("mksquashfs"), reason="squashfs-tools missing")
@pytest.mark.parametrize("case", ["link-chain", "absolute-link", "device", "setuid", "stray-top"])
def test_hostile_image_is_refused_before_it_is_mounted(scratch: Path, case: str) -> None:
    """An image's chunks match its table (anyone can make both); what it holds is checked from
    its listing before it is mounted or extracted: every link stays inside the copy (absolute
    ones may name only the mount path), no devices, no setuid files, nothing but a copy's parts."""
    from tests.helpers.archives import forge_image

    tree = _image_tree(scratch)
    to = scratch / "to"
    pseudo: list[str] = []
    if case == "link-chain":  # resolved through each other, as the kernel would
        (tree / "stack/a/b/c").mkdir(parents=True)
        os.symlink("../../..", tree / "stack/a/b/c/l1")
        os.symlink("l1/../../../../outside", tree / "stack/a/b/c/l2")
    elif case == "absolute-link":
        os.symlink("/etc/shadow", tree / "stack/bin/python3")
    elif case == "device":
        pseudo = ["-p", "stack/null c 666 0 0 1 3"]
    elif case == "setuid":
        (tree / "stack/bin/su").write_text("x")
        os.chmod(tree / "stack/bin/su", 0o4755)
    else:
        (tree / "etc").mkdir()
    img = forge_image(tree, scratch / "a.sqfs", f"{to}/sitestack/{EVIL}", pseudo=pseudo)
    for mode in ("--mount", "--mount=auto", None):
        r = stage_cli(img, to, *([mode] if mode else []))
        assert r.returncode == 6, r.stderr
        err = one_error(r)
        assert {"link-chain": "points outside", "absolute-link": "points outside",
                "device": "device or special file", "setuid": "setuid", "stray-top": "not part of a staged copy"}[case] in err
        assert staged(to) == [] and not os.path.ismount(to / "sitestack" / EVIL)


@pytest.mark.skipif(not shutil.which("mksquashfs"), reason="squashfs-tools missing")
def test_image_table_is_checked_before_anything_is_sent(scratch: Path) -> None:
    """A table that is not the image's (other length, a chunk list of the wrong size, a sha256
    that is not its chunks') or none at all: exit 6 on rank 0, before any node receives it."""
    from sitestack.scale.image import FOOTER, MAGIC
    from tests.helpers.archives import forge_image

    to = scratch / "to"
    img = forge_image(_image_tree(scratch), scratch / "a.sqfs", f"{to}/sitestack/{EVIL}")
    data = img.read_bytes()
    tail = len(data) - 16
    start = data.rindex(b'{"format": "sitestack-image"')
    table = json.loads(data[start:tail])
    cases = {"without a sitestack table": data[:start]}
    table["chunks"] = table["chunks"] + table["chunks"]
    forged = json.dumps(table).encode()
    cases["bad list of chunk sha256s"] = data[:start] + forged + FOOTER.pack(MAGIC, len(forged))
    bad = bytearray(data)
    i = data.index(b'"chunks": ["', start) + 12
    bad[i] = ord("0") if bad[i] != ord("0") else ord("1")  # one hex digit of a chunk's sha256
    cases["sha256 is not that of its chunks"] = bytes(bad)
    for what, blob in cases.items():
        img.write_bytes(blob)
        r = stage_cli(img, to, "--mount")
        assert r.returncode == 6, (what, r.stderr)
        assert what in one_error(r)
        assert not (to / "sitestack").exists(), what


# --- 4. the content hash as a path ---------------------------------------------------------------

def test_content_hash_that_is_a_path_is_refused(scratch: Path) -> None:
    a = forge(scratch / "a.tar.zst", [], {"files": {}, "symlinks": {}, "dirs": []},
              header={"content_hash": "/../../../ab" + "0" * 52})
    to = scratch / "to"
    r = stage_cli(a, to)
    assert r.returncode == 6 and "bad content hash" in one_error(r), r.stderr
    assert not list(scratch.rglob("ab*.lock")) and not (to / "sitestack").exists()


# --- 5. an archive of another stack -------------------------------------------------------------

def test_stage_target_with_an_archive_of_another_stack_is_refused(stack: StackRecord, site_root,
                                                                  scratch: Path) -> None:
    a = forge(scratch / "other.tar.zst", [], {"files": {}, "symlinks": {}, "dirs": []},
              header={"name": "conda", "version": "2023-01-10"})
    r = stage_cli(a, scratch / "to", stack.ref, root=site_root.path)
    assert r.returncode == 2, r.stderr
    err = one_error(r)
    assert "holds conda/2023-01-10" in err and f"not {stack.ref}" in err
    assert staged(scratch / "to") == []


# --- 6. locks ---------------------------------------------------------------------------------------

@needs_root
def test_a_reader_cannot_take_the_site_lock(stack: StackRecord, site_root, scratch: Path) -> None:
    from tests.helpers.users import ensure_user, run_as

    user = ensure_user()
    lock = site_root.state_lock
    # The same default again: a state change that changes nothing, and creates the lock file.
    run_cli("default", stack.ref, "--root", str(site_root.path), check=True)
    assert not stat.S_IMODE(os.stat(lock).st_mode) & 0o007  # others cannot even open it
    r = run_as(user, ["flock", "-n", "-s", str(lock), "-c", "sleep 30"], timeout=60)
    assert r.returncode != 0 and "Permission denied" in r.stderr, (r.returncode, r.stderr)
    # A lock file left 0644 by an older sitestack is closed again by the next writer.
    os.chmod(lock, 0o644)
    run_cli("default", stack.ref, "--root", str(site_root.path), check=True)
    assert not stat.S_IMODE(os.stat(lock).st_mode) & 0o007


def test_lock_wait_times_out_naming_the_holder(stack: StackRecord, site_root) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom sitestack.core.fsutil import file_lock\n"
         f"with file_lock({str(site_root.state_lock)!r}):\n print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        r = run_cli("default", stack.ref, "--root", str(site_root.path),
                    env={**os.environ, "SITESTACK_LOCK_TIMEOUT": "1"})
        assert r.returncode == 5, r.stderr
        err = one_error(r)
        assert f"locked by pid {holder.pid}, user root on host" in err and "gave up after" in err
        assert "SITESTACK_LOCK_TIMEOUT" in err
    finally:
        holder.kill()
        holder.wait()
    run_cli("default", stack.ref, "--root", str(site_root.path), check=True)  # free again


@pytest.mark.parametrize("holder_mode", ["shared", "exclusive"])
def test_cache_use_lock_wait_times_out_naming_a_flock_holder(stack: StackRecord, site_root,
                                                             holder_mode: str) -> None:
    """The package cache's use-lock (shared by builds, exclusive by gc) waits no longer than
    the other site locks, and names the holder even when it is a plain `flock` that
    recorded nothing (from the kernel's /proc/locks)."""
    from sitestack.build import pkgcache

    lock = pkgcache.use_lock(site_root)
    assert lock.is_file()  # the session stack's build made it
    flag = "-s" if holder_mode == "shared" else "-x"
    holder = subprocess.Popen(["flock", flag, str(lock), "-c", "echo held; sleep 60"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    env = {**os.environ, "SITESTACK_LOCK_TIMEOUT": "1"}
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        if holder_mode == "shared":  # a build linking: gc (exclusive) gives up
            r = run_cli("gc", "--root", str(site_root.path), env=env)
            assert r.returncode == 5, r.stderr
            err = one_error(r)
            assert "the site's package cache is locked by" in err
        else:  # gc running: a build's shared hold gives up, with the same message
            r = subprocess.run(
                [sys.executable, "-c",
                 "import sys\nfrom sitestack.core.fsutil import shared_lock\n"
                 "from sitestack.errors import ConflictError\n"
                 "try:\n with shared_lock(sys.argv[1], what='the cache'): print('got it')\n"
                 "except ConflictError as e:\n print(e, e.hint, sep='\\n'); sys.exit(5)\n", str(lock)],
                capture_output=True, text=True, env=env, timeout=60)
            assert r.returncode == 5, r.stdout + r.stderr
            err = r.stdout
            assert "the cache is locked by" in err
        assert f"pid {holder.pid} (flock), user root" in err, err
        assert "gave up after" in err and "SITESTACK_LOCK_TIMEOUT" in err
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # the shell under flock holds the descriptor too
        holder.wait()
    assert run_cli("gc", "--dry-run", "--root", str(site_root.path), env=env).returncode == 0  # free again


# --- 7. paths that would break scripts -------------------------------------------------------------

def test_activate_quotes_a_hostile_to_folder(stack: StackRecord, site_root, scratch: Path) -> None:
    r = run_cli("stage", stack.ref, "--to", str(scratch / 'x"y'), "--no-mpi", "--root", str(site_root.path))
    assert r.returncode == 2 and "which relocated Python files cannot carry" in one_error(r), r.stderr
    assert not os.listdir(scratch)
    to = scratch / "x$(touch PWNED1)`touch PWNED2` ;y & z"
    r = run_cli("stage", stack.ref, "--to", str(to), "--no-mpi", "--json", "--root", str(site_root.path),
                env=clean_env())
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    out = subprocess.run(["sh", "-c", '. "$1" && printf "%s\\n" "$SITESTACK_STAGED" && command -v python3',
                          "sh", res["activate"]], capture_output=True, text=True, cwd=scratch, env=clean_env())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == res["path"] and lines[1] == f"{res['path']}/stack/bin/python3"
    assert not list(scratch.rglob("PWNED*"))


def test_fix_shebang_uses_the_sh_trick_for_spaces() -> None:
    from sitestack.core.relocate import fix_shebang

    out = fix_shebang(b"#!/a b/bin/python\nimport x\n")
    assert out.startswith(b"#!/bin/sh\n'''exec' '/a b/bin/python' \"$0\" \"$@\"\n' '''\n")
    assert fix_shebang(b"#!/usr/bin/env python3\n") == b"#!/usr/bin/env python3\n"
    assert fix_shebang(b"#!/short/bin/python\n") == b"#!/short/bin/python\n"


def test_venv_at_a_path_with_a_space_has_a_working_pip(stack: StackRecord, site_root, scratch: Path) -> None:
    layer = scratch / "lay er"
    run_cli("venv", str(layer), "--stack", stack.ref, "--root", str(site_root.path), env=clean_env(), check=True)
    pip = layer / "bin" / "pip"
    assert pip.read_bytes().startswith(b"#!/bin/sh\n")
    r = subprocess.run([str(pip), "--version"], capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0 and r.stdout.startswith("pip "), r.stderr
    r = subprocess.run([str(layer / "bin" / "python"), "-c", "import sys; print(sys.prefix)"],
                       capture_output=True, text=True, env=clean_env())
    assert r.stdout.strip() == str(layer)


@pytest.mark.parametrize("folder", ["cl one", "x$(touch PWNED1)`touch PWNED2` ;y & z"])
def test_clone_at_a_hostile_path_has_working_scripts(stack: StackRecord, site_root, scratch: Path,
                                                     folder: str) -> None:
    """A clone whose path holds a space, `$()` or backticks: bin/pip and console scripts run
    (the /bin/sh shebang trick), and sourcing activate runs none of the embedded commands."""
    dest = scratch / folder
    r = run_cli("clone", stack.ref, "--prefix", str(dest), "--mode", "copy", "--root", str(site_root.path),
                env=clean_env())
    assert r.returncode == 0, r.stderr
    for script in ("pip", "tinyapp"):
        assert (dest / "bin" / script).read_bytes().startswith(b"#!/bin/sh\n"), script
    r = subprocess.run([str(dest / "bin" / "pip"), "--version"], capture_output=True, text=True,
                       env=clean_env(), cwd=scratch)
    assert r.returncode == 0 and r.stdout.startswith("pip ") and str(dest) in r.stdout, r.stdout + r.stderr
    r = subprocess.run([str(dest / "bin" / "tinyapp")], capture_output=True, text=True, env=clean_env(), cwd=scratch)
    assert r.returncode == 0 and r.stdout == "tinyapp 1.0\n", r.stderr
    out = subprocess.run(["sh", "-c", '. "$1" && printf "%s\\n" "$SITESTACK_CLONE" && command -v python3 && '
                          'python3 -c "import sys, tinyapp; print(sys.prefix)"', "sh", str(dest / "bin" / "activate")],
                         capture_output=True, text=True, cwd=scratch, env=clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(dest), f"{dest}/bin/python3", str(dest)]
    assert not list(scratch.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


# --- a private stack for tampering: built under umask 000 (item 11) --------------------------------

@pytest.fixture(scope="module")
def own_site(workdir: Path, wheelhouse: Path) -> Iterator[tuple[Path, StackRecord]]:
    """A root of its own with one stack, built under `umask 000` by the library itself (not
    the CLI, which adds o-w to the umask): every folder the build makes gets an explicit mode.
    Its archive is published the same way (pack's make_parent makes archives/NAME/)."""
    from tests.conftest import spec_text

    root = workdir / f"sec-site-{uuid.uuid4().hex[:6]}"
    spec = workdir / f"sec-{uuid.uuid4().hex[:6]}.toml"
    spec.write_text(spec_text("sec", ["shadowme==1.0"], wheelhouse, imports=["shadowme"]))
    script = ("import os, sys\nfrom pathlib import Path\nos.umask(0)\n"
              "from sitestack.build.stack import build\nfrom sitestack.core.layout import SiteRoot\n"
              "from sitestack.scale.pack import pack\nfrom sitestack.site.spec import load_spec\n"
              "root = SiteRoot(Path(sys.argv[2]))\n"
              "build(load_spec(sys.argv[1]), root, version='v1')\n"
              "pack('sec/v1', root, root.archive('sec', 'v1'), make_parent=True)\n")
    r = subprocess.run([sys.executable, "-c", script, str(spec), str(root)],
                       capture_output=True, text=True, env=clean_env(), timeout=900)
    assert r.returncode == 0, r.stderr
    from sitestack.core.layout import SiteRoot
    from sitestack.site.registry import Site

    yield root, Site(SiteRoot(root)).get("sec/v1")
    rmtree(root)


def world_writable(root: Path) -> list[str]:
    """What another user could write: a folder others cannot enter (no o+x, such as a
    user's private uv cache) hides what is inside it, but is itself checked."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [*dirnames, *filenames, ""]:
            p = os.path.join(dirpath, n) if n else dirpath
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o002:
                out.append(p)
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_mode & 0o001]
    return sorted(set(out))


def test_umask_000_leaves_nothing_world_writable(own_site: tuple[Path, StackRecord], scratch: Path) -> None:
    root, rec = own_site
    for args in (["hide", rec.ref], ["unhide", rec.ref], ["default", rec.ref], ["modulefiles"],
                 ["pack", rec.ref, "--publish"]):
        r = subprocess.run(["sh", "-c", 'umask 000 && exec "$@"', "sh", sys.executable, "-m", "sitestack",
                            *args, "--root", str(root)], capture_output=True, text=True, env=clean_env())
        assert r.returncode == 0, (args, r.stderr)
    r = subprocess.run(["sh", "-c", 'umask 000 && exec "$@"', "sh", sys.executable, "-m", "sitestack",
                        "stage", rec.ref, "--to", str(scratch), "--no-mpi", "--root", str(root)],
                       capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert world_writable(root) == []
    assert world_writable(scratch / "sitestack") == []
    for lock in (root / ".sitestack" / "locks").iterdir():
        assert not stat.S_IMODE(os.stat(lock).st_mode) & 0o007, lock


# --- 8. verify: FIFOs, added folders ------------------------------------------------------------

@pytest.fixture()
def writable(own_site: tuple[Path, StackRecord]) -> Iterator[StackRecord]:
    """The private stack, opened for a tampering test; put back read-only as built after it."""
    _root, rec = own_site
    snapshot = {p: (p.read_bytes(), p.stat()) for p in [*rec.site_packages.joinpath("shadowme").glob("*.py"),
                                                        rec.records / "manifest.json"]}
    subprocess.run(["chmod", "-R", "u+w", str(rec.prefix)], check=True)
    yield rec
    for p, (data, st) in snapshot.items():
        if os.path.lexists(p) and not p.is_file():
            os.unlink(p)
        p.write_bytes(data)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # the .pyc stays valid
    subprocess.run(["chmod", "-R", "a-w", str(rec.prefix)], check=True)


def test_verify_does_not_hang_on_a_fifo(own_site: tuple[Path, StackRecord], writable: StackRecord) -> None:
    root, rec = own_site
    target = rec.site_packages / "shadowme" / "__init__.py"
    data = target.read_bytes()
    target.unlink()
    os.mkfifo(target)
    try:
        r = run_cli("verify", rec.ref, "--json", "--root", str(root), timeout=60)
        assert r.returncode == 1, r.stderr
        problems = {p["path"]: p["problem"] for p in json.loads(r.stdout)[0]["problems"]}
        rel = str(target.relative_to(rec.prefix))
        assert problems[rel] == "changed (now a fifo)"
    finally:
        target.unlink()
        target.write_bytes(data)


def test_verify_reports_an_added_empty_folder(own_site: tuple[Path, StackRecord], writable: StackRecord) -> None:
    root, rec = own_site
    added = rec.site_packages / "sneaky"
    added.mkdir()
    try:
        r = run_cli("verify", rec.ref, "--json", "--root", str(root))
        problems = {p["path"]: p["problem"] for p in json.loads(r.stdout)[0]["problems"]}
        assert problems.get(str(added.relative_to(rec.prefix))) == "extra folder", problems
        assert r.returncode == 1
    finally:
        added.rmdir()


# --- 12. root running the stack with -O -----------------------------------------------------------

@needs_root
def test_root_python_O_bytecode_is_named_stray(own_site: tuple[Path, StackRecord]) -> None:
    root, rec = own_site
    assert run_cli("verify", rec.ref, "--root", str(root)).returncode == 0
    r = subprocess.run([str(rec.python_exe), "-O", "-c", "import shadowme"], capture_output=True, text=True,
                       env=clean_env())  # no PYTHONDONTWRITEBYTECODE: as root would run it
    assert r.returncode == 0, r.stderr
    strays = sorted(rec.prefix.rglob("*.opt-1.pyc"))
    assert strays, "root's python -O wrote no bytecode: the test proves nothing"
    try:
        r = run_cli("verify", rec.ref, "--json", "--root", str(root))
        problems = json.loads(r.stdout)[0]["problems"]
        kinds = {p["problem"] for p in problems}
        assert kinds - {"writable"} == {"stray bytecode"}, problems  # named, not "changed"/"extra"
        assert {p["path"] for p in problems if p["problem"] == "writable"} <= \
            {p["path"] for p in problems if p["problem"] == "stray bytecode"}
        assert {p["path"] for p in problems} >= {str(s.relative_to(rec.prefix)) for s in strays
                                                 if "shadowme" in str(s)}
    finally:
        for s in strays:
            s.unlink()
    assert run_cli("verify", rec.ref, "--root", str(root)).returncode == 0


# --- 9. clean errors -----------------------------------------------------------------------------

def test_truncated_manifest_is_a_clean_error(own_site: tuple[Path, StackRecord], writable: StackRecord) -> None:
    root, rec = own_site
    man = rec.records / "manifest.json"
    data = man.read_bytes()
    os.chmod(rec.records, 0o755)
    os.chmod(man, 0o644)
    man.write_bytes(data[: len(data) // 2])
    try:
        r = run_cli("verify", rec.ref, "--root", str(root))
        assert r.returncode == 6, r.stderr
        assert "is corrupt or truncated" in one_error(r)
    finally:
        man.write_bytes(data)


def test_corrupt_stack_json_is_skipped_by_list(own_site: tuple[Path, StackRecord], scratch: Path) -> None:
    root, rec = own_site
    site = scratch / "site"
    (site / "stacks" / "sec").mkdir(parents=True)
    subprocess.run(["cp", "-a", str(rec.prefix), str(site / "stacks" / "sec" / "v1")], check=True)
    bad = site / "stacks" / "sec" / "v0"
    (bad / ".sitestack").mkdir(parents=True)
    (bad / ".sitestack" / "stack.json").write_text('{"name": "sec", "vers')
    r = run_cli("list", "--json", "--root", str(site))
    assert r.returncode == 0, r.stderr
    assert [x["version"] for x in json.loads(r.stdout)] == ["v1"]
    assert "warning: skipping sec/v0" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("show", "sec/v0", "--root", str(site))
    assert r.returncode == 6 and "sec/v0" in one_error(r)


@pytest.mark.parametrize("case", ["missing folder", "existing folder", "below a file"])
def test_pack_output_is_checked_up_front(stack: StackRecord, site_root, scratch: Path, case: str) -> None:
    (scratch / "afile").write_text("x")
    (scratch / "adir").mkdir()
    out = {"missing folder": scratch / "nope" / "x.tar.zst", "existing folder": scratch / "adir",
           "below a file": scratch / "afile" / "x.tar.zst"}[case]
    r = run_cli("pack", stack.ref, "-o", str(out), "--root", str(site_root.path))
    assert r.returncode == 2, r.stderr
    err = one_error(r)
    assert {"missing folder": "does not exist", "existing folder": "is a folder",
            "below a file": "is a file, not a folder"}[case] in err
    assert sorted(os.listdir(scratch)) == ["adir", "afile"] and not os.listdir(scratch / "adir")


def test_venv_below_a_file_and_root_naming_a_file(stack: StackRecord, site_root, scratch: Path) -> None:
    (scratch / "afile").write_text("x")
    r = run_cli("venv", str(scratch / "afile" / "v"), "--stack", stack.ref, "--root", str(site_root.path))
    assert r.returncode == 2 and "is a file, not a folder" in one_error(r), r.stderr
    r = run_cli("list", "--root", str(scratch / "afile"))
    assert r.returncode == 2 and "is a file, not a folder" in one_error(r), r.stderr


@needs_root
@pytest.mark.parametrize("args", [["default", "{ref}"], ["hide", "{ref}"], ["deprecate", "{ref}", "-m", "old"],
                                  ["undeprecate", "{ref}"], ["modulefiles"], ["pack", "{ref}", "--publish"],
                                  ["venv", "{stacks}/mine", "--stack", "{ref}"]])
def test_unprivileged_user_changing_the_site_gets_one_line(
        stack: StackRecord, site_root, user_sitestack: dict[str, str], args: list[str]) -> None:
    from tests.helpers.users import debian_python, ensure_user, run_as

    user = ensure_user()
    argv = [a.format(ref=stack.ref, stacks=site_root.stacks) for a in args]
    env = {"PYTHONPATH": user_sitestack["PYTHONPATH"],
           "PATH": f"{user_sitestack['PATH']}:/usr/local/bin:/usr/bin:/bin"}
    before = sorted(os.listdir(site_root.path))
    r = run_as(user, [debian_python(), "-m", "sitestack", *argv, "--root", str(site_root.path)], env=env)
    assert r.returncode == 5, (argv, r.stdout, r.stderr)
    assert "not writable by this user" in one_error(r)
    assert sorted(os.listdir(site_root.path)) == before
    assert not (site_root.stacks / "mine").exists()


@needs_root
def test_build_onto_a_full_disk_is_one_line(wheelhouse: Path, scratch: Path) -> None:
    from tests.conftest import spec_text

    mnt = scratch / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], check=True)
    try:
        spec = scratch / "s.toml"
        spec.write_text(spec_text("full", ["shadowme==1.0"], wheelhouse))
        r = run_cli("build", str(spec), "--version", "v1", "--root", str(mnt / "root"), env=clean_env())
        assert r.returncode == 5, r.stderr[-2000:]
        assert "disk full" in one_error(r)
        assert not (mnt / "root" / "stacks" / "full" / "v1").exists()
        tmp = mnt / "root" / ".sitestack" / "tmp"
        assert not tmp.is_dir() or not os.listdir(tmp)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# --- 10. leftovers and codes ----------------------------------------------------------------------

def test_pack_clears_temps_of_killed_packs(stack: StackRecord, site_root, scratch: Path) -> None:
    from sitestack.core.publish import HOST

    dead = subprocess.Popen(["true"])
    dead.wait()
    out = scratch / "s.tar.zst"
    old_style = scratch / f".s.tar.zst.tmp-{dead.pid}"
    new_style = scratch / f".s.tar.zst.tmp-{HOST}-{dead.pid}-abcd"
    live = scratch / f".s.tar.zst.tmp-{HOST}-{os.getpid()}-abcd"  # a pack still running: kept
    for p in (old_style, new_style, live):
        p.write_bytes(b"\0" * 1000)
    # And one for real: a pack killed part way through.
    proc = subprocess.Popen([sys.executable, "-m", "sitestack", "pack", stack.ref, "-o", str(out), "--level", "19",
                             "--root", str(site_root.path)], env=clean_env())
    deadline = time.monotonic() + 60
    while not [p for p in scratch.iterdir() if f"-{proc.pid}-" in p.name] and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p for p in scratch.iterdir() if f"-{proc.pid}-" in p.name], "the kill left no temp"
    run_cli("pack", stack.ref, "-o", str(out), "--root", str(site_root.path), check=True)
    assert sorted(p.name for p in scratch.iterdir()) == sorted([live.name, out.name])


def test_tampered_stack_staged_on_the_fly_exits_6(own_site: tuple[Path, StackRecord], writable: StackRecord,
                                                  scratch: Path) -> None:
    root, rec = own_site
    rmtree(root / "archives")  # no published archive: stage packs the tampered tree on the fly
    target = rec.site_packages / "shadowme" / "__init__.py"
    st = target.stat()
    target.write_bytes(target.read_bytes().replace(b"1.0", b"6.6"))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(rec.prefix, 0o555)  # as root tampers: the stack still looks published (read-only)
    r = run_cli("stage", rec.ref, "--to", str(scratch), "--no-mpi", "--root", str(root), env=clean_env())
    assert r.returncode == 6, r.stderr
    assert "changed since its manifest was written" in one_error(r)
    assert staged(scratch) == []


def test_chunk_size_zero_is_refused(stack: StackRecord, site_root, scratch: Path) -> None:
    r = run_cli("stage", stack.ref, "--to", str(scratch), "--no-mpi", "--chunk-size", "0",
                "--root", str(site_root.path))
    assert r.returncode == 2 and "--chunk-size must be between" in one_error(r), r.stderr
    assert not (scratch / "sitestack").exists()


def test_root_path_with_a_quote_is_refused_up_front(wheelhouse: Path, scratch: Path) -> None:
    from tests.conftest import spec_text

    spec = scratch / "s.toml"
    spec.write_text(spec_text("q", ["shadowme==1.0"], wheelhouse))
    root = scratch / "it's"
    r = run_cli("build", str(spec), "--root", str(root))
    assert r.returncode == 2, r.stderr
    assert "cannot carry safely" in one_error(r)
    assert not root.exists()
