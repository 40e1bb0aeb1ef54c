"""What `module load NAME/VERSION` changes, with the modules its `depends_on` loads first.

One stack's changes are ``ModuleContent.env_plan``; a stack that depends on another stack of
the same site gets that stack's plan first, as Lmod's ``depends_on`` loads it (after the
family, before the stack's own changes). A dependency that is no stack of the site
(``PrgEnv-gnu``) is only a modulefile a module system can run: it is named, not planned.
`sitestack load` (user/shellenv) and the site's kernel launchers (site/kernels) both plan here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sitestack import TYPE_CHECKING
from sitestack.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from typing import Any, Protocol

    from sitestack.core.records import StackRecord
    from sitestack.site.modulefiles.content import Op

    class Site(Protocol):
        """What a plan reads of site.registry.Site (which writes kernels, so imports this)."""

        def get(self, ref: str) -> StackRecord: ...
        def stack_state(self, name: str, state: dict[str, Any] | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LoadPlan:
    ref: str  # the stack asked for
    ops: tuple[Op, ...]  # in the modulefiles' order, dependencies' first
    # ("deprecated", REF, message) and ("modules", REF, "a, b": depends_on modules that are no
    # stack of the site), in the order the module system would print them
    notes: tuple[tuple[str, str, str], ...]

    @property
    def modules(self) -> list[str]:
        """Every depends_on module that is no stack of the site, in load order."""
        return [m for kind, _ref, text in self.notes if kind == "modules" for m in text.split(", ")]


def load_plan(site: Site, ref: str | StackRecord, home: str,
              loaded: Callable[[str], bool] = lambda module: False,
              chain: tuple[str, ...] = ()) -> LoadPlan:
    """The plan of `ref` with HOME as given. `loaded(module)`: a depends_on module already
    loaded, which Lmod's depends_on leaves as it is."""
    from sitestack.site.modulefiles import content_for

    rec = site.get(ref) if isinstance(ref, str) else ref
    if rec.ref in chain:
        raise UsageError(f"{chain[0]}: depends_on loops: {' -> '.join((*chain, rec.ref))}")
    c = content_for(rec, site.stack_state(rec.name))
    ops = c.env_plan(home)
    n_family = 2 if c.family else 0  # family() comes before depends_on in the modulefile
    deps: list[Op] = []
    notes: list[tuple[str, str, str]] = []
    unknown = []
    for dep in c.depends_on:
        if loaded(dep):
            continue  # Lmod's depends_on leaves a loaded module as it is
        try:
            sub = load_plan(site, dep, home, loaded, (*chain, rec.ref))
        except NotFoundError:
            unknown.append(dep)
            continue
        if c.family and any(var == f"LMOD_FAMILY_{c.family.upper()}" for _, var, _ in sub.ops):
            # Lmod never has both loaded either: it swaps the module asked for out for its dependency.
            raise UsageError(f"{rec.ref} depends on {sub.ref}, of the same family {c.family!r}: "
                             "the two cannot be loaded together")
        deps += sub.ops
        notes += sub.notes
    if c.deprecated:
        notes.append(("deprecated", rec.ref, c.deprecated))
    if unknown:
        notes.append(("modules", rec.ref, ", ".join(unknown)))
    return LoadPlan(rec.ref, tuple(ops[:n_family] + deps + ops[n_family:]), tuple(notes))
