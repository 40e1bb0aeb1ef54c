"""sitestack install: only what the stack lacks lands in the layer; conflicts refused; site policy."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sitestack.core.records import StackRecord
from sitestack.errors import SpecError
from sitestack.site.spec import parse_spec
from tests.helpers.cli import run_cli
from tests.helpers.wheels import make_wheel
from tests.test_doctor_rebase import tree_digest
from tests.test_overlay import clean_env, layer_sp, make_layer, pyrun, sh, stack_untouched

STACK_REQS = ["shadowme==1.0", "tinyapp", "basepkg==1.0", "onlyold"]


@pytest.fixture(scope="module")
def site_wheels(workdir: Path) -> Path:
    """The site's wheelhouse for users ([user] find-links): wheels the stack build never sees."""
    wh = workdir / "install-wheels"
    if not wh.exists():
        make_wheel(wh, "newdep", "1.0")
        make_wheel(wh, "usesbase", "1.0", requires=["basepkg", "newdep"])
        make_wheel(wh, "breaksold", "1.0", requires=["basepkg>=2"])
        make_wheel(wh, "siteonly", "1.0")
        make_wheel(wh, "pinme", "1.0")
        make_wheel(wh, "pinme", "2.0")
    return wh


def user_table(site_wheels: Path, wheelhouse: Path) -> str:
    return (f'\n[user]\nfind-links = ["{site_wheels}", "{wheelhouse}"]\nno-index = true\n'
            'constraints = ["pinme<2"]\nonly-binary = ["siteonly"]\n')


@pytest.fixture(scope="module")
def inst(build_stack, site_wheels: Path, wheelhouse: Path) -> StackRecord:
    """A stack with a [user] policy: the site wheelhouse, no index, pinme<2."""
    return build_stack("inst", "1", STACK_REQS, extra=user_table(site_wheels, wheelhouse))


def install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("install", *args, env=env or clean_env())


def plan(*args: str) -> dict:
    r = install(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def names(items: list[dict]) -> list[tuple[str, str]]:
    return [(i["name"], i["version"]) for i in items]


def dist_infos(layer: Path) -> list[str]:
    return sorted(p.name for p in layer_sp(layer).glob("*.dist-info"))


def new_layer(inst: StackRecord, path: Path, *args: str) -> Path:
    return make_layer(path, inst.root, "--stack", inst.ref, *args)


def test_dependency_the_stack_has_is_not_installed(inst: StackRecord, tmp_path: Path) -> None:
    layer = new_layer(inst, tmp_path / "L")
    data = plan("--layer", str(layer), "usesbase")
    assert names(data["from_stack"]) == [("basepkg", "1.0")]
    assert names(data["install"]) == [("newdep", "1.0"), ("usesbase", "1.0")]
    assert data["shadow"] == [] and data["dry_run"] is False
    assert dist_infos(layer) == ["newdep-1.0.dist-info", "usesbase-1.0.dist-info"]
    r = pyrun(layer, "import basepkg, usesbase, newdep; print(basepkg.__file__)")
    assert r.stdout.strip() == f"{inst.site_packages}/basepkg/__init__.py", r.stderr
    assert run_cli("check", str(layer), env=clean_env()).returncode == 0
    rec = json.loads((layer / ".sitestack" / "requested.json").read_text())
    assert rec == {"requirements": ["usesbase"], "shadow": []}
    assert [p.name for p in tmp_path.iterdir() if ".install-" in p.name] == []
    stack_untouched(inst)
    # Text output: the three parts of the plan.
    r = install("--layer", str(layer), "layerpkg")
    assert r.returncode == 0, r.stderr
    assert f"installed into {layer} (on {inst.ref})" in r.stdout
    assert "from the stack:       shadowme 1.0" in r.stdout
    assert "into the layer:       layerpkg 1.0" in r.stdout
    assert "shadowed:             -" in r.stdout


def test_newer_stack_version_refused_then_shadowed(inst: StackRecord, tmp_path: Path) -> None:
    layer = new_layer(inst, tmp_path / "L")
    before = tree_digest(layer)
    r = install("--layer", str(layer), "needsnew")
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0] == ("sitestack: error: needsnew requires shadowme>=2, but the stack has shadowme 1.0; "
                        "nothing was installed"), r.stderr
    assert lines[1].startswith("hint: to install shadowme into this layer only: sitestack install --shadow shadowme")
    assert "Traceback" not in r.stderr
    assert tree_digest(layer) == before
    # The hint's command, run as given, installs the shadow.
    cmd = lines[1].split("only: ", 1)[1].split(" ", 2)[2]  # after "sitestack install"
    data = plan(*shlex.split(cmd))
    assert names(data["install"]) == [("needsnew", "1.0")]
    assert [(i["name"], i["version"], i["stack"]) for i in data["shadow"]] == [("shadowme", "2.0", "1.0")]
    r = run_cli("shadows", str(layer), "--json", env=clean_env(), check=True)
    assert json.loads(r.stdout)["shadows"] == [{"name": "shadowme", "layer": "2.0", "stack": "1.0", "active": "layer"}]
    assert run_cli("check", str(layer), env=clean_env()).returncode == 0
    rec = json.loads((layer / ".sitestack" / "requested.json").read_text())
    assert rec == {"requirements": ["needsnew"], "shadow": ["shadowme"]}


def test_shadow_that_breaks_a_stack_package_needs_force(inst: StackRecord, tmp_path: Path) -> None:
    # The stack's onlyold needs basepkg<2; breaksold needs basepkg>=2.
    layer = new_layer(inst, tmp_path / "L")
    before = tree_digest(layer)
    r = install("--layer", str(layer), "--shadow", "basepkg", "breaksold")
    assert r.returncode == 3, r.stderr
    assert "would fail `sitestack check` (onlyold 1.0 requires basepkg<2, but 2.0 is visible" in r.stderr
    assert "hint: add --force" in r.stderr and "Traceback" not in r.stderr
    assert tree_digest(layer) == before  # moved in, checked, moved out again
    assert [p.name for p in tmp_path.iterdir() if ".install-" in p.name] == []
    r = install("--layer", str(layer), "--shadow", "basepkg", "breaksold", "--force")
    assert r.returncode == 0, r.stderr
    assert "warning: installed with --force although: onlyold 1.0 requires basepkg<2" in r.stdout
    assert dist_infos(layer) == ["basepkg-2.0.dist-info", "breaksold-1.0.dist-info"]
    assert run_cli("check", str(layer), env=clean_env()).returncode == 1


def test_what_the_stack_has_is_a_no_op(inst: StackRecord, tmp_path: Path) -> None:
    layer = new_layer(inst, tmp_path / "L")
    before = {k: v for k, v in tree_digest(layer).items()}
    data = plan("--layer", str(layer), "tinyapp", "basepkg<2")
    assert names(data["from_stack"]) == [("basepkg", "1.0"), ("tinyapp", "1.0")]
    assert data["install"] == [] and data["shadow"] == []
    after = tree_digest(layer)
    # Only the record of what was asked is new; no distribution.
    assert {k for k in after if k not in before} == {".sitestack/requested.json"}
    assert dist_infos(layer) == []
    r = install("--layer", str(layer), "tinyapp")
    assert r.returncode == 0 and f"nothing to do in {layer}" in r.stdout


def test_requirements_file_and_dry_run(inst: StackRecord, tmp_path: Path) -> None:
    layer = new_layer(inst, tmp_path / "L")
    (tmp_path / "more.txt").write_text("layerpkg  # needs shadowme\n")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# what I need\nusesbase\n\n-r more.txt\n")
    before = tree_digest(layer)
    data = plan("--layer", str(layer), "-r", str(reqs), "--dry-run")
    assert data["dry_run"] is True and data["requested"] == ["usesbase", "layerpkg"]
    assert names(data["from_stack"]) == [("basepkg", "1.0"), ("shadowme", "1.0")]
    assert names(data["install"]) == [("layerpkg", "1.0"), ("newdep", "1.0"), ("usesbase", "1.0")]
    assert data["shadow"] == []
    r = install("--layer", str(layer), "-r", str(reqs), "--dry-run", "--shadow", "shadowme", "needsnew")
    assert r.returncode == 0, r.stderr
    assert f"plan for {layer}" in r.stdout
    assert "shadowed:             shadowme 2.0 (stack: 1.0)" in r.stdout
    assert tree_digest(layer) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["L", "more.txt", "requirements.txt"]  # no lock, no temp
    data = plan("--layer", str(layer), "-r", str(reqs))
    assert dist_infos(layer) == ["layerpkg-1.0.dist-info", "newdep-1.0.dist-info", "usesbase-1.0.dist-info"]


def test_activated_plain_venv_layer(inst: StackRecord, tmp_path: Path) -> None:
    layer = tmp_path / "plain"
    sh(f"{inst.python_exe} -m venv --system-site-packages {layer}")
    script = (f"source {layer}/bin/activate && {shlex.quote(sys.executable)} -m sitestack install --json "
              "layerpkg tinyapp")
    r = sh(script)
    data = json.loads(r.stdout)
    assert data["layer"] == str(layer) and data["stack"] == inst.ref
    assert names(data["install"]) == [("layerpkg", "1.0")]
    assert names(data["from_stack"]) == [("shadowme", "1.0"), ("tinyapp", "1.0")]
    assert "layerpkg-1.0.dist-info" in dist_infos(layer)
    assert not any(p.startswith("shadowme") for p in dist_infos(layer))
    r = pyrun(layer, "import layerpkg, shadowme; print(shadowme.__version__)")
    assert r.stdout.strip() == "1.0", r.stderr


def test_inheritance_off_installs_everything(inst: StackRecord, tmp_path: Path) -> None:
    layer = new_layer(inst, tmp_path / "iso", "--no-inherit")
    data = plan("--layer", str(layer), "layerpkg")
    assert data["inherit"] is False and data["from_stack"] == []
    assert names(data["install"]) == [("layerpkg", "1.0"), ("shadowme", "2.0")]
    assert pyrun(layer, "import layerpkg, shadowme; print(shadowme.__version__)").stdout.strip() == "2.0"
    assert run_cli("check", str(layer), env=clean_env()).returncode == 0


def test_site_policy_for_sitestack_install_and_plain_pip(inst: StackRecord, site_wheels: Path,
                                                          tmp_path: Path) -> None:
    policy = json.loads((inst.records / "stack.json").read_text())["user"]
    assert policy["find-links"][0] == str(site_wheels) and policy["constraints"] == ["pinme<2"]
    assert policy["no-index"] is True and policy["only-binary"] == ["siteonly"]
    a = new_layer(inst, tmp_path / "A")
    data = plan("--layer", str(a), "siteonly", "pinme")  # the constraint keeps pinme below 2
    assert names(data["install"]) == [("pinme", "1.0"), ("siteonly", "1.0")]
    b = new_layer(inst, tmp_path / "B")
    conf = (b / "pip.conf").read_text()
    assert f"constraint = {b}/.sitestack/constraints.txt" in conf
    assert (b / ".sitestack" / "constraints.txt").read_text() == "pinme<2\n"
    # Plain pip, activated, no options: pip.conf brings the wheelhouse, no-index and the constraint.
    sh(f"source {b}/bin/activate && pip install -q siteonly pinme")
    assert dist_infos(b) == ["pinme-1.0.dist-info", "siteonly-1.0.dist-info"]
    r = sh(f"source {b}/bin/activate && pip install pinme==2.0", check=False)
    assert r.returncode != 0  # the site's constraint holds for plain pip too


def test_user_table_is_validated() -> None:
    base = '[stack]\nname = "x"\n'
    for table, key in [('[user]\nconstraints = ["not a req!!"]', "user.constraints[0]"),
                       ('[user]\nonly-binary = ["bad name!"]', "user.only-binary[0]"),
                       ('[user]\nindex = "x"', "user.index"),
                       ('[user]\nno-index = "yes"', "user.no-index")]:
        with pytest.raises(SpecError) as e:
            parse_spec(base + table)
        assert e.value.key == key and e.value.exit_code == 2


def test_rebase_keeps_what_was_installed(inst: StackRecord, build_stack, site_wheels: Path, wheelhouse: Path,
                                         tmp_path: Path) -> None:
    newer = build_stack("inst", "2", ["shadowme==2.0", "basepkg==1.0"], extra=user_table(site_wheels, wheelhouse))
    layer = new_layer(inst, tmp_path / "L")
    data = plan("--layer", str(layer), "--shadow", "shadowme", "tinyapp", "needsnew")
    assert names(data["from_stack"]) == [("tinyapp", "1.0")]
    assert dist_infos(layer) == ["needsnew-1.0.dist-info", "shadowme-2.0.dist-info"]
    r = run_cli("rebase", str(layer), newer.ref, "--json", env=clean_env())
    assert r.returncode == 0, r.stderr
    changes = {c["name"]: (c["old"], c["new"], c["action"]) for c in json.loads(r.stdout)["changes"]}
    # tinyapp came from the old stack; the new one lacks it, and the record says it was asked for.
    assert changes == {"needsnew": ("1.0", "1.0", "kept"), "shadowme": ("2.0", "2.0", "from-stack"),
                       "tinyapp": (None, "1.0", "added")}
    assert dist_infos(layer) == ["needsnew-1.0.dist-info", "tinyapp-1.0.dist-info"]
    assert json.loads((layer / ".sitestack" / "requested.json").read_text())["requirements"] == \
        ["tinyapp", "needsnew"]
    assert pyrun(layer, "import tinyapp, needsnew").returncode == 0


def test_bad_input_is_one_line_exit_2(inst: StackRecord, tmp_path: Path) -> None:
    layer = new_layer(inst, tmp_path / "L")
    before = tree_digest(layer)
    cases = [
        (["--layer", str(layer), "nosuchpkg"], "no distribution named nosuchpkg in the site's find-links"),
        (["--layer", str(layer), "foo>>=1"], "invalid requirement 'foo>>=1'"),
        (["--layer", str(layer), "-r", str(tmp_path / "missing.txt")], "cannot read requirements file"),
        (["--layer", str(layer), "--shadow", "nosuch", "layerpkg"], f"--shadow nosuch: the stack {inst.ref} has no"),
        (["layerpkg"], "no layer to install into: give --layer PATH, or activate one"),
        (["--layer", str(tmp_path), "layerpkg"], "is not a venv"),
        (["--layer", str(layer)], "nothing to install"),
    ]
    for args, msg in cases:
        r = install(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert lines[0].startswith("sitestack: error: ") and msg in lines[0], (args, r.stderr)
        assert len([ln for ln in lines if not ln.startswith("hint: ")]) == 1 and "Traceback" not in r.stderr
    (tmp_path / "bad.txt").write_text("ok-pkg\n--index-url http://x\n")
    r = install("--layer", str(layer), "-r", str(tmp_path / "bad.txt"))
    assert r.returncode == 2 and f"{tmp_path}/bad.txt:2:" in r.stderr
    assert tree_digest(layer) == before


def test_killed_install_is_undone_by_the_next(inst: StackRecord, tmp_path: Path) -> None:
    """A journal left by a kill -9 mid-move: the next install rolls it back first."""
    from sitestack.user.layertx import Tx

    layer = new_layer(inst, tmp_path / "L")
    assert install("--layer", str(layer), "layerpkg").returncode == 0
    before = tree_digest(layer)
    from sitestack.core.publish import HOST
    from tests.test_doctor_rebase import _dead_pid

    # As core.publish.make_temp names it, of a dead process (a name without host and pid is
    # not honoured: tests/test_hostile_records.py)
    work = tmp_path / f".L.install-{HOST}-{_dead_pid()}-0000"
    (work / "stage" / "lib" / "x").mkdir(parents=True)
    os.chmod(work, 0o700)
    (work / "stage" / "lib" / "x" / "junk.py").write_text("")
    tx = Tx(layer, work)
    tx.remove_files([layer_sp(layer) / "layerpkg" / "__init__.py"])
    tx.merge(work / "stage", layer, skip=set())
    assert tree_digest(layer) != before  # "killed" here: no commit, no rollback
    data = plan("--layer", str(layer), "--dry-run", "tinyapp")
    assert data["install"] == []
    assert install("--layer", str(layer), "tinyapp").returncode == 0
    after = tree_digest(layer)
    assert {k: v for k, v in after.items() if k != ".sitestack/requested.json"} == \
        {k: v for k, v in before.items() if k != ".sitestack/requested.json"}
    assert not work.exists()
