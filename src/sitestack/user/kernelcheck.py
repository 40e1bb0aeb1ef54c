"""What is wrong with a Jupyter kernel, and the command that fixes it (doctor, `kernel list`).

Any kernelspec is judged, sitestack's or not: a kernel that points at a deleted layer, a
retired stack, a bare `python`, a missing interpreter, or a layer that can no longer import
ipykernel fails quietly in Jupyter (or, worse, starts another python). Everything comes from
``site.kernels.read_spec``: shape-checked, never through a symlink.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sitestack import TYPE_CHECKING
from sitestack.errors import UsageError

if TYPE_CHECKING:
    from sitestack.core.records import RetiredRecord
    from sitestack.site.kernels import Spec


def has_ipykernel(site_packages: Path) -> bool:
    return (site_packages / "ipykernel" / "__init__.py").is_file()


def problems(spec: Spec) -> list[tuple[str, str, str]]:
    """(kind, message, fix) for a kernel that cannot start as it should, most telling first."""
    from shlex import quote

    ours = spec.ours
    name = spec.name
    remove = f"sitestack kernel remove {name}" if ours else f"jupyter kernelspec remove {name}"
    env = spec.meta.get("env", "")
    if ours and spec.meta.get("kind") in ("layer", "clone"):
        p = Path(env)
        if not p.is_absolute() or not p.is_dir():
            return [("kernel-env-deleted", f"kernel {name}: its {spec.meta['kind']} {env} was deleted",
                     f"{remove}  # or `sitestack kernel prune` for every such kernel")]
    if not spec.argv:
        return [("kernel-argv-missing", f"kernel {name} ({spec.path}) has no argv", remove)]
    exe = spec.argv[0]
    if "/" not in exe and re.fullmatch(r"python[0-9.]*", exe):
        return [("kernel-bare-python", f"kernel {name} starts a bare {exe!r}: whichever python is "
                 "first on the Jupyter server's PATH, not its environment's",
                 f"{remove}; then `sitestack kernel add PATH_OF_ITS_ENV --name {name}`")]
    layer = _layer_of(spec)
    if layer is not None:
        gone = _retired(layer)
        if gone is not None:
            from sitestack.site.retire import default_ref

            default = default_ref(gone.name, gone.prefix.parents[2]) or f"{gone.name}/VERSION"
            return [("kernel-stack-retired", f"kernel {name}: {layer} sits on {gone.ref}, retired on "
                     f"{gone.date}: {gone.message}",
                     f"sitestack rebase {quote(str(layer))} {default} --allow-missing-stack"
                     + ("" if ours else f"; then {remove} and `sitestack kernel add {quote(str(layer))}`"))]
    if not os.path.exists(exe):
        return [("kernel-argv-missing", f"kernel {name}: {exe} (its argv[0]) no longer exists", remove)]
    if layer is not None and _no_ipykernel(layer):
        return [("kernel-no-ipykernel", f"kernel {name}: {layer} does not inherit its stack's "
                     "packages and has no ipykernel of its own, so the kernel cannot start",
                     f"sitestack inherit {quote(str(layer))} on  # or: {quote(str(layer))}/bin/python "
                     "-m pip install ipykernel")]
    return []


def _layer_of(spec: Spec) -> Path | None:
    """The layer a kernel runs: ours record it; another's argv[0] may be LAYER/bin/python."""
    if spec.meta.get("kind") == "layer":
        return Path(spec.meta.get("env", ""))
    if spec.argv and spec.argv[0].startswith("/"):
        cand = Path(spec.argv[0]).parent.parent
        if Path(spec.argv[0]).parent.name == "bin" and (cand / "pyvenv.cfg").is_file():
            return cand
    return None


def _retired(layer: Path) -> RetiredRecord | None:
    from sitestack.site.retire import retired_of
    from sitestack.user.layer import find_stack, open_layer

    try:
        lay = open_layer(layer)
    except UsageError:
        return None
    return None if find_stack(lay) is not None else retired_of(lay.stack_ref, lay.stack_root, lay.home)


def _no_ipykernel(layer: Path) -> bool:
    from sitestack.user.layer import open_layer

    try:
        lay = open_layer(layer)
    except UsageError:
        return False
    return not lay.inherit and not has_ipykernel(lay.site_packages)
