"""The stub modulefiles of a retired version: `module load NAME/VERSION` fails and says why.

The stub is hidden from `module avail` by the .modulerc files (hide_version / module-hide),
but a user who names the version in a job script gets the reason instead of "not found".
The error is raised only in load mode, so `module avail`, `spider` and `show` never fail.
"""

from __future__ import annotations

from sitestack import TYPE_CHECKING
from sitestack.core.templates import render_file
from sitestack.site.modulefiles.lmod import PACKAGE

if TYPE_CHECKING:
    from sitestack.core.records import RetiredRecord


def reason(r: RetiredRecord) -> str:
    return f"{r.ref} was retired on {r.date}: {r.message}"


def lmod_stub(r: RetiredRecord, header: str) -> str:
    return render_file(PACKAGE, "retired.lua", {"WHATIS": f"{r.ref}: retired on {r.date}", "REASON": reason(r)},
                       raw={"HEADER": header})


def tcl_stub(r: RetiredRecord, header: str) -> str:
    return render_file(PACKAGE, "retired.tcl", {"WHATIS": f"{r.ref}: retired on {r.date}", "REASON": reason(r)},
                       raw={"HEADER": header})
