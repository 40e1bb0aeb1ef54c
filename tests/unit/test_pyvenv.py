"""core.pyvenv: pyvenv.cfg read as CPython's site.py reads it; edits that keep everything else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sitestack.core import pyvenv

SAMPLE = (
    "home = /opt/py/bin\r\n"
    "Include-System-Site-Packages=  false \n"
    "# a comment = with an equals sign\n"
    "version = 3.11.9\n"
    "no equals sign here\n"
    "x-custom = keep me\n"
    "include-system-site-packages = true\n"  # the last one wins
    "prompt = 'my env'"  # no final newline
)


def test_parse_lower_cases_keys_and_the_last_one_wins() -> None:
    cfg = pyvenv.parse(SAMPLE)
    assert cfg["home"] == "/opt/py/bin"
    assert cfg["include-system-site-packages"] == "true"
    assert cfg["x-custom"] == "keep me"
    assert cfg["prompt"] == "'my env'"
    assert "no equals sign here" not in cfg


def test_parse_agrees_with_cpython_site(tmp_path: Path) -> None:
    """The real site.py on a real venv: its include-system-site-packages and home decide."""
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    cfg = venv / "pyvenv.cfg"
    home = pyvenv.read(cfg)["home"]
    for text, inherit in ((f"HOME = {home}\nInclude-System-Site-Packages = TRUE\n", True),
                          (f"home={home}\r\ninclude-system-site-packages = true\r\n"
                           "include-system-site-packages = false\r\n", False)):
        cfg.write_bytes(text.encode())
        r = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import site, sys; print(any(p in sys.path for p in site.getsitepackages("
                            "[sys.base_prefix])))"], capture_output=True, text=True, check=True)
        assert (r.stdout.strip() == "True") is inherit
        assert (pyvenv.parse(text)["include-system-site-packages"].lower() == "true") is inherit


def test_update_edits_in_place_and_keeps_the_rest() -> None:
    out = pyvenv.update(SAMPLE, {"include-system-site-packages": "false", "sitestack-stack": "py/1"})
    assert out == SAMPLE.replace("include-system-site-packages = true\n",
                                 "include-system-site-packages = false\n") + "\nsitestack-stack = py/1\n"
    assert pyvenv.parse(out)["include-system-site-packages"] == "false"
    # Spaces around the value and CRLF endings survive; keys are matched case-insensitively.
    assert pyvenv.update("A =  1  \r\nb=2\r\n", {"a": "x"}) == "A =  x  \r\nb=2\r\n"
    assert pyvenv.update("", {"home": "/x"}) == "home = /x\n"
    assert pyvenv.update(SAMPLE, {}) == SAMPLE


def test_dumps_keeps_order_and_round_trips() -> None:
    items = [("home", "/p/bin"), ("include-system-site-packages", "true"), ("sitestack-root", "/r")]
    text = pyvenv.dumps(items)
    assert text == "home = /p/bin\ninclude-system-site-packages = true\nsitestack-root = /r\n"
    assert list(pyvenv.parse(text).items()) == items
