"""Classroom mode: the shared password, the session's owner name and the teacher role.

Laptop mode (the default, ``make app``) binds 127.0.0.1 and has one user: the session's owner is
the operating system's user name and may cancel or delete any run, so nothing is asked. Classroom
mode is on when ``GENLAB_CLASSROOM=1`` or when the server listens on anything but the loopback
interface (``make app HOST=0.0.0.0`` does both); then each session enters an owner name once, and
optional passwords from Streamlit secrets (``.streamlit/secrets.toml``)::

    [classroom]
    password = "..."          # shared by the class; without it the app shows nothing
    teacher_password = "..."  # unlocks the teacher role: cancel or delete anyone's run

Passwords are compared in constant time (:func:`hmac.compare_digest`). Whether a user may change
a run is decided in genlab (:mod:`genlab.owners`); pages only pass :func:`actor` along.
"""

from __future__ import annotations

import hmac
import os

import streamlit as st

from genlab.owners import Actor, check_owner_name, local_owner, may_modify
from genlab.runs import RunInfo

CLASSROOM_ENV = "GENLAB_CLASSROOM"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_UNLOCKED, _OWNER, _TEACHER = "access_unlocked", "access_owner", "access_teacher"


def classroom_mode() -> bool:
    """Whether the app serves a class: asked for, or listening beyond the loopback interface
    (Streamlit's own default address, the empty string, listens on every interface)."""
    asked = os.environ.get(CLASSROOM_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    address = str(st.get_option("server.address") or "").strip().strip("[]")
    return asked or address not in LOOPBACK


def _secret(name: str) -> str | None:
    """``[classroom] <name>`` from Streamlit secrets; None when unset or empty."""
    try:
        value = st.secrets["classroom"][name]
    except (KeyError, FileNotFoundError, TypeError):  # no secrets file, section or key
        return None
    return str(value) if value not in (None, "") else None


def _matches(given: str, expected: str | None) -> bool:
    """Constant-time comparison, so the time taken says nothing about the password."""
    return expected is not None and hmac.compare_digest(
        given.encode("utf-8"), expected.encode("utf-8")
    )


def password_required() -> bool:
    """Whether this session must still give the class password before seeing the app."""
    return classroom_mode() and _secret("password") is not None and not st.session_state.get(
        _UNLOCKED, False
    )


def unlock(password: str) -> bool:
    """Check the class password; on a match this session may see the app. Returns the match."""
    ok = _matches(password, _secret("password"))
    if ok:
        st.session_state[_UNLOCKED] = True
    return ok


def owner_name() -> str | None:
    """This session's owner name; None while a classroom session has not chosen one."""
    if not classroom_mode():
        return local_owner()
    return st.session_state.get(_OWNER)


def sign_in(name: str) -> str:
    """Set this session's owner name, once: it cannot change within the session.

    Raises:
        ConfigError: the name is empty, too long or holds odd characters.
    """
    name = check_owner_name(name)
    st.session_state.setdefault(_OWNER, name)
    return st.session_state[_OWNER]


def teacher_available() -> bool:
    """Whether a teacher password is configured (classroom mode only)."""
    return classroom_mode() and _secret("teacher_password") is not None


def become_teacher(password: str) -> bool:
    """Check the teacher password; on a match this session may change anyone's run."""
    ok = classroom_mode() and _matches(password, _secret("teacher_password"))
    if ok:
        st.session_state[_TEACHER] = True
    return ok


def is_teacher() -> bool:
    """The laptop's single user, or a classroom session that gave the teacher password."""
    return not classroom_mode() or bool(st.session_state.get(_TEACHER, False))


def actor() -> Actor | None:
    """Who this session acts as, for genlab's ownership checks; None before signing in."""
    name = owner_name()
    return None if name is None else Actor(name, teacher=is_teacher())


def can_modify(run: RunInfo) -> bool:
    """Whether this session may cancel or delete ``run`` (the buttons it is offered)."""
    who = actor()
    return who is not None and may_modify(run.owner, who)
