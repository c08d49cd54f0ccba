"""What the admin page's three training forms share: the modes they offer, the Check button (its answer kept for
the request it checked) and the Start training button (queue, audit, say so)."""

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import streamlit as st

from core.accounts import audit
from core.errors import AppError
from pages.widgets.sign_in import account

MODES = ("head", "decoder", "full")
MODE_LABELS = {
    "head": "head: a new classifier on frozen features",
    "decoder": "decoder: then the decoder fine-tuned",
    "full": "full: then the whole network fine-tuned",
}

Answer = TypeVar("Answer")


def checked(
    request: object, check: Callable[[], Answer], state_key: str, button_key: str | None, waiting: str
) -> Answer | None:
    """The Check button: its answer for this very request (kept in the session under `state_key`), or None, with
    the check's error or the `waiting` caption said."""
    answer = st.session_state.get(state_key)
    if st.button("Check", key=button_key):
        try:
            answer = (request, check())
        except AppError as err:
            answer = None
            st.error(str(err))
        st.session_state[state_key] = answer
    if answer is None or answer[0] != request:
        st.caption(waiting)
        return None
    return answer[1]


def start_button(
    queue: Callable[[], str], what: str, state_key: str, button_key: str | None, admin_dir: Path
) -> None:
    """Start training: queue the run, audit it as `what` ("NEW from BASE ..."), forget the check's answer and say
    so; or say why the run was refused."""
    if st.button("Start training", type="primary", key=button_key):
        try:
            run_id = queue()
        except AppError as err:
            st.error(str(err))
            return
        audit(admin_dir, account().name, f"started training run {run_id}: {what}")
        st.session_state[state_key] = None
        st.success(f"Training run {run_id} is queued; follow it below.")
