"""The conda front door's pure parts: its saved state (read back checked), undoing a level,
what unload takes back, conda specs as PEP 508, the command line (its declaration), conda.sh's
translation, and the modulefile parts rendered from ModuleContent."""

from __future__ import annotations

import json

import pytest

from sitestack.commands.conda import COMMAND
from sitestack.conda.shellhook import translate
from sitestack.errors import UsageError
from sitestack.site.modulefiles.content import (
    FRONT_DOOR_PATHS,
    FRONT_DOOR_STATE,
    FRONT_DOOR_UNSET,
    ModuleContent,
    apply_plan,
    front_door_unload,
    layer_plan,
)
from sitestack.user.condafront.install import pypi_requirement
from sitestack.user.condafront.state import Level, State, changed, read_state, record, undo


def _state(levels: object) -> dict[str, str]:
    return {FRONT_DOOR_STATE: json.dumps({"v": 1, "stack": "s/1", "levels": levels})}


GOOD = {"prefix": "/c", "name": "c", "kind": "clone", "old": {"PATH": "/a"}, "new": {"PATH": "/c/bin:/a"}}


@pytest.mark.parametrize("raw", [
    "not json", "[]", json.dumps({"v": 2, "stack": "", "levels": []}), json.dumps({"v": 1, "levels": []}),
    json.dumps({"v": 1, "stack": "s", "levels": 7}),
    json.dumps({"v": 1, "stack": "s", "levels": [{**GOOD, "prefix": "relative"}]}),
    json.dumps({"v": 1, "stack": "s", "levels": [{**GOOD, "kind": "rootkit"}]}),
    json.dumps({"v": 1, "stack": "s", "levels": [{**GOOD, "old": {"BAD NAME": "x"}}]}),
    json.dumps({"v": 1, "stack": "s", "levels": [{**GOOD, "new": {"PATH": 7}}]}),
    json.dumps({"v": 1, "stack": "s", "levels": [{**GOOD, "old": {FRONT_DOOR_PATHS: "/x"}}]}),
    json.dumps({"v": 1, "stack": "s", "levels": [GOOD] * 65}),
    "x" * (2 << 20),
])
def test_saved_state_of_another_shape_is_refused(raw: str) -> None:
    with pytest.raises(UsageError) as e:
        read_state({FRONT_DOOR_STATE: raw})
    assert "is not what the conda front door wrote" in str(e.value) and "\n" not in str(e.value)
    assert e.value.hint and "unset " in e.value.hint


def test_state_round_trip_and_what_unload_takes_back() -> None:
    env = {"PATH": "/tool:/stack/bin:/usr/bin", "HOME": "/h"}
    lv1 = Level("/stack", "base", "base", *changed(env, {**env, "CONDA_SHLVL": "1"}))
    mid = {**env, "CONDA_SHLVL": "1"}
    after = {**mid, "PATH": "/c/bin:/tool:/usr/bin", "CONDA_SHLVL": "2", "CONDA_PREFIX_1": "/stack",
             "VIRTUAL_ENV": "/v"}
    lv2 = Level("/c", "c", "clone", *changed(mid, after))
    out = record(after, State("s/1", (lv1, lv2)))
    assert read_state(out).levels == (lv1, lv2)
    assert out[FRONT_DOOR_PATHS] == "/c/bin"  # /stack/bin was there before the first level
    assert set(out[FRONT_DOOR_UNSET].split()) == {"CONDA_SHLVL", "CONDA_PREFIX_1", "VIRTUAL_ENV"}
    gone = front_door_unload(out)
    assert gone["PATH"] == "/tool:/usr/bin" and "CONDA_PREFIX_1" not in gone and FRONT_DOOR_STATE not in gone
    # A name of another shape in the list is never unset.
    assert front_door_unload({**out, FRONT_DOOR_UNSET: "HOME PATH"})["HOME"] == "/h"


def test_undo_is_exact_or_surgical() -> None:
    before = {"PATH": "/stack/bin:/usr/bin", "VIRTUAL_ENV": "/old"}
    after = {"PATH": "/c/bin:/usr/bin", "VIRTUAL_ENV": "/new", "CONDA_SHLVL": "2"}
    lv = Level("/c", "c", "clone", *changed(before, after))
    assert undo(after, lv) == before
    # The user prepended to PATH and set VIRTUAL_ENV meanwhile: their changes stay.
    moved = {**after, "PATH": "/mine:/c/bin:/usr/bin", "VIRTUAL_ENV": "/theirs"}
    assert undo(moved, lv) == {"PATH": "/mine:/stack/bin:/usr/bin", "VIRTUAL_ENV": "/theirs"}


def test_plans() -> None:
    c = ModuleContent(name="n", version="1", prefix="/s", root="/r", site="x", python="3.11.7", description="",
                      help="", packages=(), family="", depends_on=(), setenv=(), prepend_path=(), deprecated=None,
                      tool="/r/.sitestack/tools/t/bin")
    plan = c.env_plan("/h")
    assert plan[0] == ("prepend", "PATH", "/r/.sitestack/tools/t/bin")
    assert [v for k, v, _ in plan if k == "keep"] == ["CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_SHLVL",
                                                      "CONDA_PROMPT_MODIFIER", "VIRTUAL_ENV", "SITESTACK_CLONE"]
    env = apply_plan({"PATH": "/usr/bin", "VIRTUAL_ENV": "/v"}, plan)
    assert env["PATH"] == "/h/.local/x/n/1/bin:/s/bin:/r/.sitestack/tools/t/bin:/usr/bin" and env["VIRTUAL_ENV"] == "/v"
    assert c.functions[0][0] == "conda" and "/r/.sitestack/tools/t/bin/conda" in c.functions[0][1]
    clone = ModuleContent(**{**c.__dict__, "clone": True, "prefix": "/cl", "user_base": ".local/cl"})
    assert clone.env_plan("/h") == [("prepend", "PATH", "/cl/bin"), ("set", "PYTHONUSERBASE", "/h/.local/cl"),
                                    ("prepend", "PATH", "/h/.local/cl/bin"), ("set", "SITESTACK_CLONE", "/cl")]
    assert clone.functions == ()
    assert apply_plan({"PATH": "/usr/bin"}, layer_plan("/my layer")) == {"PATH": "/my layer/bin:/usr/bin",
                                                                         "VIRTUAL_ENV": "/my layer"}


@pytest.mark.parametrize(("spec", "req"), [
    ("numpy=1.26", "numpy==1.26.*"), ("numpy=1.26.*", "numpy==1.26.*"), ("numpy 1.26", "numpy==1.26.*"),
    ("numpy==1.26.4", "numpy==1.26.4"), ("numpy>=1.26,<2", "numpy>=1.26,<2"), ("numpy", "numpy"),
    ("scikit-image=0.22", "scikit-image==0.22.*"),
])
def test_conda_specs_as_pep508(spec: str, req: str) -> None:
    assert pypi_requirement(spec) == req


@pytest.mark.parametrize("spec", ["numpy=1.26=py311_0", "numpy>>1", "@@"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(UsageError):
        pypi_requirement(spec)


def _line(*words: str) -> dict[str, object]:
    ns = COMMAND.parse(list(words), {})
    assert ns is not None  # another program's line: answered or refused, never left to argparse
    return vars(ns)


def test_grammar() -> None:
    """conda's command line, from the one declaration (commands/conda.py COMMAND)."""
    r = _line("create", "--clone", "base", "-p", "/x y", "-y")
    assert (r["subcommand"], r["clone"], r["prefix"], r["yes"], r["packages"]) == ("create", "base", "/x y", True, [])
    assert _line("create", "--clone=base", "--prefix=/x", "--force")["prefix"] == "/x"
    r = _line("install", "-c", "a", "--channel=b", "numpy=1.26", "scipy")
    assert r["channels"] == ["a", "b"] and r["packages"] == ["numpy=1.26", "scipy"]
    r = _line("shell.zsh", "activate", "--stack", "env")
    assert (r["subcommand"], r["stack"], r["env"]) == ("shell.zsh activate", True, "env")
    r = _line("run", "-n", "e", "python", "-c", "print(1)", "-h")
    assert r["name"] == "e" and r["cmd"] == ["python", "-c", "print(1)", "-h"] and r["help"] is False
    assert _line("run", "--", "-x")["cmd"] == ["-x"]
    assert _line("info", "--envs")["envs"] is True and _line("info", "-e", "--json")["json"] is True
    assert _line("env", "list")["subcommand"] == "env list"
    assert _line("uninstall", "x")["subcommand"] == "remove"
    assert _line("install", "-h")["help"] is True and _line("-h", "install")["help"] is True
    assert _line("--version")["version"] is True and _line("-V")["version"] is True
    assert _line()["subcommand"] is None and _line("help", "install")["subcommand"] == "help"
    assert _line("shell.posix", "hook")["subcommand"] == "shell.posix hook"


@pytest.mark.parametrize(("line", "says"), [
    (["frobnicate"], "conda frobnicate is not part of sitestack's conda front door: it does activate"),
    (["init"], "conda init is not part of sitestack's conda front door: not needed"),
    (["env", "export"], "conda env export is not part of sitestack's conda front door: pip freeze"),
    (["env"], "conda env is not part of sitestack's conda front door: it does"),
    (["install", "--bogus"], "conda install: unknown option --bogus (conda --help)"),
    (["install", "--chan", "x"], "conda install: unknown option --chan"),  # no abbreviations
    (["create", "-pX"], "conda create: unknown option -pX"),
    (["create", "-p"], "conda create: -p needs a value"),
    (["create", "-p", "a", "--prefix=b"], "conda create: --prefix=b given twice"),
    (["install", "--", "x"], "conda install: unknown option --"),
    (["shell.bash"], "conda shell.bash: say activate, deactivate or hook"),
    (["shell.bash", "init"], "conda shell.bash: say activate, deactivate or hook"),
    (["shell.fish", "hook"], "conda shell.fish: unknown shell (shell.bash, shell.zsh, shell.posix)"),
    (["shell.bash", "activate", "--bogus"], "conda activate: unknown option --bogus"),
    (["activate", "a", "b"], "conda activate: unexpected argument 'b'"),
    (["deactivate", "x"], "conda deactivate: unexpected argument 'x'"),
    (["install", "a", "-y", "b"], "conda install: unexpected 'b': give the PKGs together"),
    (["--bogus"], "unknown option --bogus (conda --help)"),
])
def test_bad_lines_are_one_line(line: list[str], says: str) -> None:
    with pytest.raises(UsageError) as e:
        COMMAND.parse(line, {})
    assert str(e.value).startswith(says) and "\n" not in str(e.value) and e.value.exit_code == 2


def test_the_shells_activate_is_the_activate() -> None:
    """`conda shell.bash activate` (what the `conda` function runs) takes what `conda activate`
    takes: one declaration, two places."""
    top = COMMAND.table["activate"]
    assert all(COMMAND.table[f"shell.{d}"].table["activate"] is top for d in ("bash", "zsh", "posix"))


def test_the_conda_lines_users_run_import_no_argparse() -> None:
    """The lines of every `conda activate` in a user's shell, and the clone, start without
    argparse (a fresh interpreter: this one has it)."""
    import subprocess
    import sys

    for words in (["create", "--clone", "base", "-p", "/nonexistent/x"], ["activate", "x"],
                  ["shell.bash", "activate", "x"], ["install", "--bogus"], ["frobnicate"]):
        code = ("import sys; from sitestack.cli import main; rc = main(sys.argv[1:]); "
                "print('argparse' in sys.modules, rc)")
        r = subprocess.run([sys.executable, "-c", code, "conda", *words], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1"})
        assert r.stdout.split()[-2:] == ["False", "2"], (words, r.stdout, r.stderr)
        assert r.stderr.startswith("conda: error: ") and "Traceback" not in r.stderr, r.stderr


def test_conda_sh_translation() -> None:
    from tests.helpers.condachannel import CONDA_SH

    record, skipped = translate(CONDA_SH.replace("@P@", "/s"))
    assert record["env"] == [["CONDA_EXE", "/s/bin/conda"], ["_CE_M", ""], ["_CE_CONDA", ""],
                             ["CONDA_PYTHON_EXE", "/s/bin/python"]]
    functions = dict(record["functions"])  # type: ignore[arg-type]
    assert list(functions) == ["__conda_exe", "__conda_hashr", "__conda_activate", "__conda_reactivate", "conda"]
    assert functions["__conda_exe"].strip() == '"$CONDA_EXE" $_CE_M $_CE_CONDA "$@"'
    assert "__conda_activate \"$@\"" in functions["conda"]
    assert record["condabin"] is True and skipped == []
    _, skipped = translate("echo hi\nexport OK=1\n")
    assert skipped == ["echo hi"]
