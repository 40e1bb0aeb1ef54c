"""core.templates: one quoting rule per language, proven by the real interpreters."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from sitestack.core.templates import lua_quote, render, sh_quote, tcl_quote

HOSTILE = [
    "plain", "", "with space", "it's", 'say "hi"', "$HOME and `id` and $(id)", "back\\slash",
    "new\nline", "tab\there", "brackets [exit 1] {x}", "unicode é ☃ 𝄞", "--opt", "a;b|c&d",
    "__PREFIX__",  # a value that looks like a placeholder is not expanded again
]


@pytest.mark.parametrize("value", HOSTILE)
def test_sh_quote_is_shlex_quote(value: str) -> None:
    assert sh_quote(value) == shlex.quote(value)


@pytest.mark.parametrize("shell", ["bash", "dash", "zsh"])
def test_sh_values_survive_the_real_shell(shell: str) -> None:
    if not shutil.which(shell):
        pytest.skip(f"{shell} not installed")
    text = "".join(f"printf '%s\\0' __V{i}__\n" for i in range(len(HOSTILE)))
    script = render(text, {f"V{i}": v for i, v in enumerate(HOSTILE)}, "sh")
    r = subprocess.run([shell, "-c", script], capture_output=True, check=True)
    assert r.stdout.decode("utf-8").split("\0")[:-1] == HOSTILE


def test_lua_values_survive_real_lua() -> None:
    lua = shutil.which("lua") or shutil.which("lua5.3")
    if not lua:
        pytest.skip("lua not installed")
    text = "".join(f"io.write(__V{i}__, '\\0')\n" for i in range(len(HOSTILE)))
    script = render(text, {f"V{i}": v for i, v in enumerate(HOSTILE)}, "lua")
    assert script.isascii()
    r = subprocess.run([lua, "-e", script], capture_output=True, check=True)
    assert r.stdout.decode("utf-8").split("\0")[:-1] == HOSTILE


def test_tcl_values_survive_real_tclsh() -> None:
    tclsh = shutil.which("tclsh")
    if not tclsh:
        pytest.skip("tclsh not installed")
    text = "fconfigure stdout -encoding utf-8 -translation lf\n" + "".join(
        f"puts -nonewline [string cat __V{i}__ \\0]\n" for i in range(len(HOSTILE)))
    script = render(text, {f"V{i}": v for i, v in enumerate(HOSTILE)}, "tcl")
    assert script.isascii()
    r = subprocess.run([tclsh], input=script.encode(), capture_output=True, check=True)
    assert r.stdout.decode("utf-8").split("\0")[:-1] == HOSTILE


def test_one_pass_and_strict() -> None:
    assert render("a=__A__ b=__B__", {"A": "__B__", "B": "x y"}, "sh") == "a=__B__ b='x y'"
    with pytest.raises(ValueError, match="without values: \\['B'\\]"):
        render("__A__ __B__", {"A": "1"}, "sh")
    with pytest.raises(ValueError, match="without placeholders: \\['C'\\]"):
        render("__A__", {"A": "1", "C": "2"}, "sh")
    # Shell words that merely contain underscores are not placeholders.
    assert render('"${_SITESTACK_OLD_PATH+x}" __init__ __A__', {"A": "v"}, "sh") == \
        '"${_SITESTACK_OLD_PATH+x}" __init__ v'


def test_modulefile_writers_share_the_quote_functions() -> None:
    from sitestack.site.modulefiles import lmod, tcl

    for v in HOSTILE:
        assert lmod.q(v) == lua_quote(v) and tcl.q(v) == tcl_quote(v)


def test_raw_values_go_in_as_they_are_in_the_same_pass() -> None:
    text = "a\n__BLOCK__\n  __GONE__\nb=__B__ __INLINE__\n"
    out = render(text, {"B": "__BLOCK__"}, "sh", raw={"BLOCK": "x '1'\ny __B__", "GONE": "", "INLINE": "$z"})
    # The raw block is not quoted and not expanded again; the empty one takes its line with it.
    assert out == "a\nx '1'\ny __B__\nb=__BLOCK__ $z\n"
    # An empty raw value inside a line just goes, the line stays.
    assert render("[__E__]\n", {}, "lua", raw={"E": ""}) == "[]\n"
    with pytest.raises(ValueError, match="both quoted and raw: \\['A'\\]"):
        render("__A__", {"A": "1"}, "sh", raw={"A": "2"})
    with pytest.raises(ValueError, match="without placeholders: \\['C'\\]"):
        render("__A__", {"A": "1"}, "sh", raw={"C": ""})


def test_modulefile_templates_render_hostile_values_for_real_lua_and_tclsh(tmp_path: Path) -> None:
    """Every modulefile template, rendered with hostile values, is valid Lua / Tcl source."""
    from sitestack.site.modulefiles import lmod, tcl
    from sitestack.site.modulefiles.content import HEADER, ModuleContent

    lua, tclsh = shutil.which("luac") or shutil.which("luac5.3"), shutil.which("tclsh")
    if not lua or not tclsh:
        pytest.skip("luac or tclsh not installed")
    for clone, conda in ((False, False), (False, True), (True, False), (True, True)):
        c = ModuleContent(
            name="n", version="1", prefix=HOSTILE[5], root=HOSTILE[9], site="s", python="3.11.9",
            description=HOSTILE[7], help=HOSTILE[10], packages=(("a", "1"), ("b", "__X__")), family="python",
            depends_on=("gcc",), setenv=tuple((f"V{i}", v) for i, v in enumerate(HOSTILE[:-1])),
            prepend_path=(("P", HOSTILE[4]),), deprecated=HOSTILE[6], conda=conda, clone=clone)
        text = lmod.modulefile(c, HEADER)
        # No placeholder left over, no blank line where an optional part was left out.
        assert text.isascii() and "\n\n" not in text and "__" not in text.replace("__X__", "")
        (tmp_path / "m.lua").write_text(text)
        subprocess.run([lua, "-p", str(tmp_path / "m.lua")], check=True)
        ttext = tcl.modulefile(c, HEADER)
        assert ttext.isascii() and "\n\n" not in ttext and "__" not in ttext.replace("__X__", "")
        # `info complete` proves every brace and quote closes; the body is not run.
        r = subprocess.run([tclsh], input=f"puts [info complete {{{ttext}}}]\n", capture_output=True, text=True)
        assert r.stdout.strip() == "1", r.stderr
