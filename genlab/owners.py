"""Who may change a run: owner names, the acting user (:class:`Actor`) and the one rule.

Anyone may view any run. Only the run's owner, or the teacher, may delete or cancel it. The rule
lives here, below the dashboard, so :meth:`genlab.runs.RunStore.delete` and
:meth:`genlab.runs.RunStore.request_cancel` enforce it for every caller that says who is acting;
the page only decides which buttons to draw. A caller that names nobody (``actor=None``: the
command line, a sweep driver, a test) acts as the machine's operator, who owns the files anyway.

Owner names are chosen by the students themselves (there are no accounts), so the rule stops
accidents and mischief between honest names, not a student who types someone else's name; the
shared password keeps strangers out (see the README's "Classroom server" section).
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass

from genlab.errors import ConfigError, OwnershipError

MAX_NAME = 40
_NAME = re.compile(r"[\w][\w .@-]*")  # letters, digits and _ first; then also space . @ -


@dataclass(frozen=True)
class Actor:
    """The user behind an action.

    Args:
        name: Their owner name, as stored in each run's ``owner`` column.
        teacher: The teacher may delete or cancel anyone's run.
    """

    name: str
    teacher: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", check_owner_name(self.name))


def check_owner_name(name: object) -> str:
    """A valid owner name, stripped: 1 to 40 letters, digits, spaces and ``_ . @ -``.

    Raises:
        ConfigError: the name is empty, too long, or holds other characters.
    """
    if not isinstance(name, str):
        raise ConfigError(f"an owner name must be text (got {type(name).__name__})")
    name = " ".join(name.split())
    if not name:
        raise ConfigError("enter a name (for example your first name) so your runs carry it")
    if len(name) > MAX_NAME:
        raise ConfigError(f"a name has at most {MAX_NAME} characters (got {len(name)})")
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"the name {name!r} may only hold letters, digits, spaces and _ . @ - "
            "and must start with a letter or digit"
        )
    return name


def local_owner() -> str:
    """The owner name of a single-user (laptop) session: the operating system's user name."""
    try:
        return check_owner_name(getpass.getuser())
    except (ConfigError, OSError, KeyError):  # no such user entry (some containers)
        return "local"


def may_modify(owner: str | None, actor: Actor | None) -> bool:
    """Whether ``actor`` may delete or cancel a run owned by ``owner``.

    A run without an owner (started from the command line or by a sweep) belongs to the
    operator and the teacher only.
    """
    return actor is None or actor.teacher or (owner is not None and owner == actor.name)


def check_may_modify(run_id: str, owner: str | None, actor: Actor | None, action: str) -> None:
    """Raise unless ``actor`` may ``action`` (``"delete"``, ``"cancel"``) the run.

    Raises:
        OwnershipError: the actor is neither the run's owner nor the teacher.
    """
    if not may_modify(owner, actor):
        whose = f"{owner}'s run" if owner else "a run started outside the dashboard"
        raise OwnershipError(
            f"{actor.name} cannot {action} {run_id}: it is {whose}; only its owner or the "
            "teacher can"
        )
