"""The classroom gate, drawn by the router before any page: the class password, then the
owner name, then (in the sidebar) who is signed in and the teacher's unlock.

In laptop mode (``make app``) it draws nothing and lets every page through. In classroom mode a
session that has not given the password sees only the password form: no page, no sidebar, no
run names. Checks and session state live in ``services.access``.
"""

import services
import streamlit as st

from genlab.errors import GenlabError


def _password_form() -> None:
    st.title("genlab")
    with st.form("access_password_form"):
        given = st.text_input("Class password", type="password", key="access_password_input",
                              help="Your teacher gives it out in class.")
        if st.form_submit_button("Enter", type="primary"):
            if services.unlock(given):
                st.rerun()
            st.error("That is not the class password.")


def _name_form() -> None:
    st.title("genlab")
    st.markdown("Your runs carry your name. Everyone sees every run, but only you (or the "
                "teacher) can cancel or delete yours.")
    with st.form("access_name_form"):
        name = st.text_input("Your name", max_chars=40, key="access_name_input")
        if st.form_submit_button("Start", type="primary"):
            try:
                services.sign_in(name)
            except GenlabError as err:
                st.error(str(err))
            else:
                st.rerun()


def _identity() -> None:
    """Who is signed in, and the teacher's unlock when a teacher password is set."""
    with st.sidebar:
        role = " (teacher)" if services.is_teacher() else ""
        st.caption(f"Signed in as **{services.owner_name()}**{role}")
        if services.teacher_available() and not services.is_teacher():
            with st.expander("Teacher"), st.form("access_teacher_form"):
                given = st.text_input("Teacher password", type="password",
                                      key="access_teacher_input")
                if st.form_submit_button("Unlock"):
                    if services.become_teacher(given):
                        st.rerun()
                    st.error("That is not the teacher password.")


def require_access() -> bool:
    """Draw the gate; True when the session may see the pages (always, in laptop mode)."""
    if not services.classroom_mode():
        return True
    if services.password_required():
        _password_form()
        return False
    if services.owner_name() is None:
        _name_form()
        return False
    _identity()
    return True
