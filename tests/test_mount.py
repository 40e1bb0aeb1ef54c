"""stage --mount / unstage: real squashfs mounts (the kernel as root, squashfuse_ll as a real
unprivileged user, a real setuid helper), real Open MPI with a private mount namespace and a
tmpfs `local` folder per rank (one rank = one node), real kill -9s and a real full disk."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitestack.core.fsutil import rmtree
from sitestack.core.records import StackRecord
from sitestack.scale.image import read_image
from tests.conftest import run_cli
from tests.helpers.env import offline_env as clean_env
from tests.helpers.users import BASE_PATH, ensure_user, make_user_dir, run_as
from tests.test_stage import MPIEXEC, mpi_env, needs_mpi

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root (or a test user made by root)")
needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("mksquashfs", "unsquashfs", "squashfuse_ll")),
                                 reason="run scripts/install-test-deps.sh (squashfs-tools, squashfuse)")
pytestmark = [needs_root, needs_tools]
PROBE = ("import json, sys, sysconfig, shadowme, pip; print(json.dumps([sys.prefix, "
         "sysconfig.get_config_var('LIBDIR'), sysconfig.get_paths()['purelib'], shadowme.__file__, "
         "pip.__file__]))")


def mount_lines(under: Path) -> list[list[str]]:
    """This namespace's mounts at or below `under`: [mount id, mount point, fstype, source, options]."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        f[4] = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), f[4])  # \040 is a space
        if f[4] == str(under) or f[4].startswith(f"{under}/"):
            out.append([f[0], f[4], r[0], r[1], f[5]])
    return out


def unmount_all(under: Path) -> None:
    for m in reversed(mount_lines(under)):
        subprocess.run(["umount", "-l", m[1]], capture_output=True)


def left(to: Path) -> list[str]:
    """What stage left under DIR/sitestack, the lock files apart (recursively, by name)."""
    base = to / "sitestack"
    if not base.is_dir():
        return []
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if ".locks" not in p.parts)


def stage(img: Path, to: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("stage", "--archive", str(img), "--to", str(to), "--no-mpi", *extra, env=env or clean_env())


def activate_probe(final: Path, code: str = PROBE, *, runner=None) -> list[str]:  # type: ignore[no-untyped-def]
    argv = ["sh", "-c", f'. "{final}/activate" && python -c "$1" && tinyapp && pip --version', "sh", code]
    r = runner(argv) if runner else subprocess.run(argv, capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def check_probe(lines: list[str], final: Path) -> None:
    prefix, libdir, purelib, shadowme, pip = json.loads(lines[0])
    stack = str(final / "stack")
    assert (prefix, libdir) == (stack, f"{stack}/lib")
    assert purelib.startswith(stack + "/") and shadowme.startswith(purelib + "/") and pip.startswith(stack + "/")
    assert lines[1] == "tinyapp 1.0" and f"from {stack}/" in lines[2]


@pytest.fixture(scope="module")
def mnt(workdir: Path) -> Iterator[Path]:
    d = workdir / f"mnt-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    unmount_all(d)
    rmtree(d)


@pytest.fixture(scope="module")
def image(stack: StackRecord, site_root, mnt: Path) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """The shared stack as an image for `--to MNT/local` (made once; tests stage and unstage it)."""
    to, out = mnt / "local", mnt / "stack.sqfs"
    run_cli("pack", stack.ref, "-o", str(out), "--to", str(to), "--root", str(site_root.path), check=True)
    return out, to


@pytest.fixture()
def clean(image: tuple[Path, Path]) -> Iterator[Path]:
    """The image's --to folder, unmounted and emptied after the test whatever happened."""
    yield image[1]
    unmount_all(image[1])
    rmtree(image[1])


# --- root: the kernel mount --------------------------------------------------------------------

def test_root_mounts_with_the_kernel_reuses_the_mount_and_unstages(image: tuple[Path, Path], clean: Path) -> None:
    img, to = image
    r = stage(img, to, "--mount", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    final = Path(res["path"])
    assert (res["status"], res["how"]) == ("staged", "kernel")
    [m] = mount_lines(to)
    assert m[1:4] == [str(final), "squashfs", m[3]] and m[3].startswith("/dev/loop")
    assert {"ro", "nosuid", "nodev"} <= set(m[4].split(","))
    check_probe(activate_probe(final), final)
    with pytest.raises(OSError, match="Read-only file system"):
        (final / "stack" / "new").write_text("x")  # even root: the mount itself is read-only
    assert sorted(os.listdir(to / "sitestack")) == [".images", ".locks", final.name]

    # A second stage on this node reuses the mount: nothing is sent, written or mounted again.
    image_ino = os.stat(to / "sitestack" / ".images" / f"{final.name}.sqfs").st_ino
    r = stage(img, to, "--mount", "--json")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert (again["status"], again["how"], again["path"]) == ("reused", "kernel", str(final))
    assert mount_lines(to) == [m]
    assert os.stat(to / "sitestack" / ".images" / f"{final.name}.sqfs").st_ino == image_ino

    r = run_cli("unstage", "--to", str(to), "--json", check=True)
    assert str(final) in json.loads(r.stdout)["removed"]
    assert mount_lines(to) == [] and not (to / "sitestack").exists()
    assert subprocess.run(["losetup", "-j", str(img)], capture_output=True, text=True).stdout == ""


def test_layer_is_mounted_with_its_stack_from_an_image_made_on_the_fly(  # type: ignore[no-untyped-def]
        stack: StackRecord, packed_layer: Path, site_root, mnt: Path) -> None:
    to = mnt / "with layer"
    try:
        r = run_cli("stage", stack.ref, "--layer", str(packed_layer), "--to", str(to), "--mount", "--no-mpi",
                    "--json", "--root", str(site_root.path), env=clean_env())
        assert r.returncode == 0, r.stderr
        assert "making a squashfs image" in r.stderr
        res = json.loads(r.stdout)
        final = Path(res["path"])
        assert res["how"] == "kernel" and [x[1] for x in mount_lines(to)] == [str(final)]
        assert f"home = {final}/stack/bin\n" in (final / "layer" / "pyvenv.cfg").read_text()
        code = "import json, sys, layerpkg, shadowme; print(json.dumps([sys.prefix, sys.base_prefix, layerpkg.__file__, shadowme.__file__]))"
        out = subprocess.run(["sh", "-c", f'. "{final}/activate" && python -c "$1" && pip --version', "sh", code],
                             capture_output=True, text=True, env=clean_env())
        assert out.returncode == 0, out.stderr
        prefix, base, lp, sm = json.loads(out.stdout.splitlines()[0])
        assert (prefix, base) == (str(final / "layer"), str(final / "stack"))
        assert lp.startswith(f"{final}/layer/") and sm.startswith(f"{final}/stack/")
        assert f"from {final}/" in out.stdout.splitlines()[1]
        # Rank 0's image and its tree were made on node-local disk and are gone.
        assert sorted(os.listdir(to / "sitestack")) == [".images", ".locks", final.name]
        run_cli("unstage", "--to", str(to), check=True)
        assert mount_lines(to) == [] and not (to / "sitestack").exists()
    finally:
        unmount_all(to)


def test_a_tar_zst_archive_is_made_into_an_image_for_mount(stack_archive: Path, mnt: Path) -> None:
    to = mnt / "from-tar"
    try:
        r = stage(stack_archive, to, "--mount", "--json")
        assert r.returncode == 0, r.stderr
        assert "making a squashfs image" in r.stderr
        final = Path(json.loads(r.stdout)["path"])
        assert json.loads(r.stdout)["how"] == "kernel" and [x[1] for x in mount_lines(to)] == [str(final)]
        check_probe(activate_probe(final), final)
        assert run_cli("unstage", "--to", str(to)).returncode == 0 and mount_lines(to) == []
    finally:
        unmount_all(to)


# --- failures: a full disk, kill -9 ------------------------------------------------------------

def test_full_disk_is_exit_5_with_nothing_left(image: tuple[Path, Path], clean: Path) -> None:
    img, to = image
    to.mkdir(parents=True, exist_ok=True)
    size = read_image(img).size
    # Too small for the image: refused before a byte is sent. Room for the image but inodes for
    # half the files: unsquashfs (stage without --mount) runs into a real ENOSPC part way.
    files = read_image(img).header.files
    for opts, extra in ((f"size={size // 2}", ("--mount",)), (f"nr_inodes={files // 2}", ())):
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(to)], check=True)
        try:
            r = stage(img, to, *extra)
            assert r.returncode == 5, r.stderr
            assert "disk full" in r.stderr and r.stderr.count("sitestack: error:") == 1
            assert left(to) == [] and [x[1] for x in mount_lines(to)] == [str(to)]  # the tmpfs alone
        finally:
            subprocess.run(["umount", str(to)], check=True)


@pytest.mark.parametrize("point", ["receiving", "received", "placed", "mkdir", "mounted"])
@pytest.mark.parametrize("then", ["unstage", "stage"])
def test_killed_stage_leaves_nothing_the_next_one_cannot_clean(image: tuple[Path, Path], clean: Path,
                                                               point: str, then: str) -> None:
    """A real SIGKILL at each step of receiving and mounting an image (the test seam
    SITESTACK_STAGE_TEST_KILL): whatever it left, the next unstage removes all of it, and the
    next stage replaces it (or, once mounted, reuses it)."""
    img, to = image
    r = stage(img, to, "--mount", env=clean_env(SITESTACK_STAGE_TEST_KILL=point))
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert left(to), "the kill left something behind"
    if then == "stage":
        r = stage(img, to, "--mount", "--json")
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["status"] == ("reused" if point == "mounted" else "staged")
        final = Path(res["path"])
        check_probe(activate_probe(final), final)
        assert [x[1] for x in mount_lines(to)] == [str(final)]
        assert not [p for p in left(to) if ".tmp-" in p]
    r = run_cli("unstage", "--to", str(to), "--json")
    assert r.returncode == 0, r.stderr
    assert mount_lines(to) == [] and not (to / "sitestack").exists()


def test_node_placeholder_and_another_folder_are_refused(image: tuple[Path, Path], mnt: Path) -> None:
    img, to = image
    r = stage(img, mnt / "{node}", "--mount")
    assert r.returncode == 2 and "--mount needs one --to path" in r.stderr
    r = stage(img, mnt / "elsewhere", "--mount")
    assert r.returncode == 2 and f"stage it with --to {to}" in r.stderr
    assert not (mnt / "elsewhere").exists()


# --- MPI: 4 ranks, each its own node (a private mount namespace and tmpfs) ---------------------

NS_MAP = "0:n0,1:n1,2:n2,3:n3"


def on_nodes(script: str, tmp: Path, local: Path, env: dict[str, str]) -> list[dict[str, str]]:
    """Run `script` on 4 ranks under real Open MPI, each rank in a private mount namespace with
    its own tmpfs on `local`: four nodes with node-local disks. In the script $S runs sitestack,
    $O is the rank's output prefix; each file $O.NAME comes back as {NAME: text}."""
    out = tmp / f"ns-{uuid.uuid4().hex[:8]}"
    out.mkdir()
    wrapped = (f'mount --make-rprivate / && mount -t tmpfs tmpfs "{local}" || exit 99\n'
               f'S="{sys.executable} -m sitestack"; O="{out}/r$OMPI_COMM_WORLD_RANK"; LOCAL="{local}"; export LOCAL\n'
               f"{script}\n")
    r = subprocess.run([str(MPIEXEC), "-n", "4", "--oversubscribe", "unshare", "-m", "sh", "-c", wrapped],
                       capture_output=True, text=True, env={**env, "SITESTACK_STAGE_NODE_MAP": NS_MAP},
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    ranks: list[dict[str, str]] = [{} for _ in range(4)]
    for f in out.iterdir():
        rank, _, name = f.name.partition(".")
        ranks[int(rank[1:])][name] = f.read_text()
    return ranks


@needs_mpi
def test_mpi_every_node_mounts_the_published_image(stack: StackRecord, site_root, workdir: Path) -> None:  # type: ignore[no-untyped-def]
    local = workdir / f"nodes-{uuid.uuid4().hex[:8]}" / "local"
    local.mkdir(parents=True)
    published = site_root.image(stack.name, stack.version)
    try:
        run_cli("pack", stack.ref, "--publish", "--format", "squashfs", "--to", str(local),
                "--root", str(site_root.path), check=True)
        assert published.is_file()
        script = f'''
$S stage {stack.ref} --to "$LOCAL" --mount --json --chunk-size 1000000 >"$O.stage" 2>"$O.stage_err"; echo $? >"$O.stage_rc"
$S stage {stack.ref} --to "$LOCAL" --mount --no-mpi --json >"$O.again" 2>"$O.again_err"
sh -c '. "$LOCAL"/sitestack/*/activate && python -c "$1" && tinyapp && pip --version' sh "{PROBE}" >"$O.probe" 2>&1
grep " $LOCAL/" /proc/self/mountinfo >"$O.mounts"
$S unstage --to "$LOCAL" --json >"$O.unstage" 2>&1; echo $? >"$O.unstage_rc"
grep -c " $LOCAL/" /proc/self/mountinfo >"$O.after"; ls -A "$LOCAL" >>"$O.after"
'''
        ranks = on_nodes(script, workdir, local, mpi_env(site_root.path))
        sources = set()
        for i, r in enumerate(ranks):
            assert r["stage_rc"].strip() == "0", r["stage_err"]
            res = json.loads(r["stage"])
            final = Path(res["path"])
            assert final == local / "sitestack" / res["id"]  # the same path on every node
            assert (res["node"], res["status"], res["how"]) == (f"n{i}", "staged", "kernel")
            assert sorted((n["node"], n["status"], n["how"]) for n in res["nodes"]) == \
                [(f"n{k}", "staged", "kernel") for k in range(4)]
            assert r["again"] and json.loads(r["again"])["status"] == "reused", r["again_err"]
            assert r["probe"].startswith("["), r["probe"]
            check_probe(r["probe"].splitlines(), final)
            [mount] = r["mounts"].splitlines()
            fields = mount.split(" - ")[1].split()
            assert fields[0] == "squashfs" and fields[1].startswith("/dev/loop")
            sources.add(fields[1])
            assert r["unstage_rc"].strip() == "0" and r["after"].split() == ["0"], r["unstage"]
        assert len(sources) == 4  # four nodes, four mounts of four copies
        assert f"reading the published image {published}" in ranks[0]["stage_err"]
        assert all("published" not in r["stage_err"] for r in ranks[1:]), "only rank 0 reads"
    finally:
        published.unlink(missing_ok=True)
        rmtree(local.parent)


@needs_mpi
def test_mpi_one_flipped_byte_is_refused_on_every_node_before_mounting(image: tuple[Path, Path], site_root,  # type: ignore[no-untyped-def]
                                                                       workdir: Path) -> None:
    img, to = image
    bad = workdir / f"bad-{uuid.uuid4().hex[:8]}.sqfs"
    data = bytearray(img.read_bytes())
    info = read_image(img)
    at = info.size // 2
    data[at] ^= 0x01
    bad.write_bytes(bytes(data))
    k = at // info.chunk + 1
    try:
        script = '''
$S stage --archive "$1" --to "$LOCAL" --mount >"$O.stage" 2>"$O.stage_err"; echo $? >"$O.stage_rc"
grep -c " $LOCAL/" /proc/self/mountinfo >"$O.mounts"; ls -A "$LOCAL/sitestack" >"$O.left"
'''.replace('"$1"', f'"{bad}"')
        to.mkdir(parents=True, exist_ok=True)
        ranks = on_nodes(script, workdir, to, mpi_env(site_root.path))
        for r in ranks:
            assert r["stage_rc"].strip() == "6", r["stage_err"]
            err = r["stage_err"].strip().splitlines()[-1]
            assert err.startswith("sitestack: error: staging failed on 4 of 4 node(s)")
            for n in range(4):  # each node found it, and says where
                assert f"node n{n} (host " in err
            assert err.count(f"image chunk {k} of {len(info.chunks)}") == 4 and "does not match its sha256" in err
            assert r["mounts"].split() == ["0"] and r["left"].split() == [".locks"]
    finally:
        bad.unlink()
        rmtree(to)


# --- a real unprivileged user: squashfuse_ll, no squashfuse, a site's setuid helper -------------

@pytest.fixture()
def user_image(stack: StackRecord, site_root, user_sitestack: dict[str, str]) -> Iterator[tuple[Path, Path, dict[str, str]]]:  # type: ignore[no-untyped-def]
    """(image, --to folder, environment) for the test user: both in a folder of its own."""
    user = ensure_user()
    d = make_user_dir(user, prefix="sitestack-mount-")
    to = d / "local"
    img = d / "stack.sqfs"
    run_cli("pack", stack.ref, "-o", str(img), "--to", str(to), "--root", str(site_root.path), check=True)
    env = {"PYTHONPATH": user_sitestack["PYTHONPATH"], "PATH": f"{user_sitestack['PATH']}:{BASE_PATH}",
           "SITESTACK_ROOT": str(site_root.path)}
    try:
        yield img, to, env
    finally:
        unmount_all(d)
        rmtree(d)


def as_user(stack: StackRecord, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_as(ensure_user(), [str(stack.python_exe), "-m", "sitestack", *args], env=env)


def daemons(user: str, gone: bool = False) -> list[str]:
    """The user's squashfuse daemons; with `gone`, once they have exited (a daemon ends just
    after its unmount), or those still running after 10 s."""
    import time

    for _ in range(100):
        pids = subprocess.run(["pgrep", "-u", user, "squashfuse"], capture_output=True, text=True).stdout.split()
        if not (gone and pids):
            break
        time.sleep(0.1)
    return pids


def test_user_mounts_with_squashfuse_ll_which_outlives_the_mpi_job(
        stack: StackRecord, user_image: tuple[Path, Path, dict[str, str]]) -> None:
    img, to, env = user_image
    user = ensure_user()
    # Under mpiexec (one rank): the FUSE daemon must outlive the job that mounted it.
    r = run_as(user, [str(MPIEXEC), "-n", "1", str(stack.python_exe), "-m", "sitestack", "stage", "--archive",
                      str(img), "--to", str(to), "--mount", "--json"], env=env)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    final = Path(res["path"])
    assert res["how"] == "squashfuse_ll"
    [m] = mount_lines(to)
    assert m[1:3] == [str(final), "fuse.squashfuse_ll"] and len(daemons(user.name)) == 1
    check_probe(activate_probe(final, runner=lambda argv: run_as(user, argv, env=env)), final)

    r = as_user(stack, env, "stage", "--archive", str(img), "--to", str(to), "--mount", "--no-mpi", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "reused", r.stderr
    assert mount_lines(to) == [m]

    # Its daemon killed: the mount is dead (ENOTCONN); the next stage replaces it.
    subprocess.run(["pkill", "-KILL", "-u", user.name, "squashfuse_ll"], check=True)
    r = as_user(stack, env, "stage", "--archive", str(img), "--to", str(to), "--mount", "--no-mpi", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "staged", r.stderr
    check_probe(activate_probe(final, runner=lambda argv: run_as(user, argv, env=env)), final)

    r = as_user(stack, env, "unstage", "--to", str(to))
    assert r.returncode == 0, r.stderr
    assert mount_lines(to) == [] and not (to / "sitestack").exists() and daemons(user.name, gone=True) == []


def test_user_without_squashfuse_is_exit_7_unless_auto(stack: StackRecord,
                                                     user_image: tuple[Path, Path, dict[str, str]]) -> None:
    img, to, env = user_image
    user = ensure_user()
    tools = img.parent / "bin"  # this machine's tools, squashfuse apart
    tools.mkdir()
    for t in ("unsquashfs", "fusermount3", "sh", "setpriv"):
        os.symlink(shutil.which(t), tools / t)  # type: ignore[arg-type]
    env = {**env, "PATH": f"{tools}"}
    r = as_user(stack, env, "stage", "--archive", str(img), "--to", str(to), "--mount", "--no-mpi")
    assert r.returncode == 7, r.stderr
    assert r.stderr.count("sitestack: error:") == 1 and "Traceback" not in r.stderr
    assert "Debian/Ubuntu package: squashfuse" in r.stderr and "--mount=auto" in r.stderr
    assert left(to) == [] and mount_lines(to) == []

    r = as_user(stack, env, "stage", "--archive", str(img), "--to", str(to), "--mount=auto", "--no-mpi", "--json")
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "note:" in ln]
    assert len(notes) == 1 and "cannot mount the image" in notes[0] and "extracted it there instead" in notes[0]
    res = json.loads(r.stdout)
    final = Path(res["path"])
    assert res["how"] == "extracted" and mount_lines(to) == [] and final.is_dir()
    check_probe(activate_probe(final, runner=lambda argv: run_as(user, argv, env={**env, "PATH": BASE_PATH})), final)
    assert as_user(stack, env, "unstage", "--to", str(to)).returncode == 0
    assert not (to / "sitestack").exists()


HELPER_C = r"""
#include <string.h>
#include <unistd.h>
/* A site's setuid mount helper, as `sitestack config stage_mount_helper` names one:
   HELPER IMAGE DIR mounts, HELPER -u [-z] DIR unmounts. */
int main(int argc, char **argv) {
    if (setgid(0) != 0 || setuid(0) != 0) return 3;
    if (argc == 3 && strcmp(argv[1], "-u") == 0)
        execl("/bin/umount", "umount", argv[2], (char *)0);
    else if (argc == 4 && strcmp(argv[1], "-u") == 0 && strcmp(argv[2], "-z") == 0)
        execl("/bin/umount", "umount", "-l", argv[3], (char *)0);
    else if (argc == 3)
        execl("/bin/mount", "mount", "-t", "squashfs", "-o", "ro,nosuid,nodev,loop", argv[1], argv[2], (char *)0);
    return 2;
}
"""


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
def test_user_mounts_with_the_kernel_through_the_sites_setuid_helper(
        stack: StackRecord, site_root, user_image: tuple[Path, Path, dict[str, str]]) -> None:  # type: ignore[no-untyped-def]
    img, to, env = user_image
    helper = img.parent / "squashfs-mount-helper"
    src = img.parent / "helper.c"
    src.write_text(HELPER_C)
    subprocess.run(["gcc", "-o", str(helper), str(src)], check=True)
    os.chmod(helper, 0o4755)  # root's, setuid
    run_cli("config", "stage_mount_helper", str(helper), "--root", str(site_root.path), check=True)
    try:
        r = as_user(stack, env, "stage", "--archive", str(img), "--to", str(to), "--mount", "--no-mpi", "--json")
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        final = Path(res["path"])
        assert res["how"] == "helper"
        [m] = mount_lines(to)
        assert m[1:3] == [str(final), "squashfs"]  # a kernel mount the user could not make alone
        check_probe(activate_probe(final, runner=lambda argv: run_as(ensure_user(), argv, env=env)), final)
        r = as_user(stack, env, "unstage", "--to", str(to))  # the helper's -u: the user cannot umount it
        assert r.returncode == 0, r.stderr
        assert mount_lines(to) == [] and not (to / "sitestack").exists()
    finally:
        run_cli("config", "stage_mount_helper", "--unset", "--root", str(site_root.path), check=True)
