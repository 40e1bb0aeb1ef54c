"""core.templates: one quoting rule per language, proven by the real interpreters."""

from __future__ import annotations

import shlex
import shutil
import subprocess

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
