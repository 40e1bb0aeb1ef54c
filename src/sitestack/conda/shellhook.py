"""Real conda in a [conda] stack that carries the `conda` package, wired declaratively.

conda's shell integration is `PREFIX/etc/profile.d/conda.sh`: a few `export` lines
(CONDA_EXE, _CE_M, _CE_CONDA, CONDA_PYTHON_EXE), the functions `__conda_exe`, `__conda_hashr`,
`__conda_activate`, `__conda_reactivate` and `conda`, and a block that, in a shell where conda
was never set up, puts `PREFIX/condabin` on PATH. A module must not source it (that would be an
`execute{}` whose changes unload cannot undo), so the build translates it once: the exports
become the modulefile's `pushenv`, the functions its `set_shell_function` / `set-function`
(every body as conda wrote it), `condabin` a `prepend_path`. Anything else at the top level
is named in the build log and left out.

The base is read-only, so the build also writes `PREFIX/.condarc` (packages and new
environments go to the user's `~/.conda/pkgs` and `~/.conda/envs`; the site's channels) and
`conda-meta/history` (what the build installed, as conda records it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from sitestack.conda.records import append_history

CONDA_SH = "etc/profile.d/conda.sh"
_EXPORT = re.compile(r"""\s*\\?export\s+([A-Za-z_][A-Za-z0-9_]*)=(?:'([^']*)'|"([^"$`\\]*)"|([^\s'"$`\\;]*))\s*""")
_FUNC = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(\)\s*([{(])\s*")  # fullmatch: no `$` (it would also match before a final newline)
_CONDABIN = re.compile(r"condabin")


def translate(text: str) -> tuple[dict[str, object], list[str]]:
    """(the "conda_shell" record: env, functions, path, and the lines left out)."""
    env: list[list[str]] = []
    functions: list[list[str]] = []
    skipped: list[str] = []
    condabin = False
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _FUNC.fullmatch(line)
        if m:
            close = "}" if m.group(2) == "{" else ")"
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].rstrip() != close:
                body.append(lines[i])
                i += 1
            functions.append([m.group(1), "\n".join(body) + "\n"])
        elif (e := _EXPORT.fullmatch(line)) is not None:
            value = next(v for v in (e.group(2), e.group(3), e.group(4)) if v is not None)
            env.append([e.group(1), value])
        elif line.startswith(("if ", "if[")):
            depth = 1
            block = [line]
            while depth and i + 1 < len(lines):
                i += 1
                block.append(lines[i])
                word = lines[i].strip().split(" ", 1)[0]
                depth += {"if": 1, "fi": -1}.get(word, 0)
            if any(_CONDABIN.search(b) for b in block):
                condabin = True  # the "conda was never set up in this shell" block
            else:
                skipped.append(block[0])
        elif line.strip() and not line.lstrip().startswith("#"):
            skipped.append(line)
        i += 1
    return {"env": env, "functions": functions, "condabin": condabin}, skipped


def wire(prefix: Path, final: Path, channels: Sequence[str], specs: Sequence[str],
         packages: Iterable[str]) -> tuple[dict[str, object] | None, list[str]]:
    """In a conda stack being built at `prefix` (published at `final`): when it carries conda,
    its translated shell integration (for stack.json) and the lines left out; `.condarc` and
    `conda-meta/history` written. (None, []) when the stack has no conda."""
    sh = prefix / CONDA_SH
    if not sh.is_file() or not (prefix / "bin" / "conda").is_file():
        return None, []
    record, skipped = translate(sh.read_text(encoding="utf-8", errors="replace"))
    path = [str(final / "condabin")] if record.pop("condabin") and (prefix / "condabin").is_dir() else []
    record["path"] = path
    # YAML: JSON strings are YAML strings, so any channel is quoted safely.
    (prefix / ".condarc").write_text(
        "# Written by sitestack build: this base is a read-only site stack, so packages and new\n"
        "# environments go to your home. The channels are those the site built it from.\n"
        "channels:\n" + "".join(f"  - {json.dumps(c)}\n" for c in channels)
        + "pkgs_dirs:\n  - ~/.conda/pkgs\nenvs_dirs:\n  - ~/.conda/envs\n", encoding="utf-8")
    append_history(prefix, "sitestack build (conda packages of the spec)", sorted(packages), [], list(specs))
    return record, skipped
