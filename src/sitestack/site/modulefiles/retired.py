"""The stub modulefiles of a retired version: `module load NAME/VERSION` fails and says why.

The stub is hidden from `module avail` by the .modulerc files (hide_version / module-hide),
but a user who names the version in a job script gets the reason instead of "not found".
The error is raised only in load mode, so `module avail`, `spider` and `show` never fail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sitestack.site.modulefiles import lmod, tcl

if TYPE_CHECKING:
    from sitestack.core.records import RetiredRecord


def reason(r: RetiredRecord) -> str:
    return f"{r.ref} was retired on {r.date}: {r.message}"


def lmod_stub(r: RetiredRecord, header: str) -> str:
    return "\n".join([
        f"-- {header}",
        f"whatis({lmod.q(f'{r.ref}: retired on {r.date}')})",
        'if (mode() == "load") then',
        f"  LmodError({lmod.q(reason(r))})",  # LmodError aborts the load with a non-zero status
        "end",
    ]) + "\n"


def tcl_stub(r: RetiredRecord, header: str) -> str:
    return "\n".join([
        "#%Module1.0",
        f"# {header}",
        f"module-whatis {tcl.q(f'{r.ref}: retired on {r.date}')}",
        "if {[module-info mode load]} {",
        f"    puts stderr {tcl.q(reason(r))}",
        "    break",  # Environment Modules: the load is aborted and `module load` fails
        "}",
    ]) + "\n"
