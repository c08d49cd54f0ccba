"""The Admin page's damaged job folders: folders under the cache's `jobs/` without a readable status (a
submission that failed half-way, a hand edit). Every job scan skips them, so nobody's work stops; here an admin
sees them and may remove them."""

from pathlib import Path

import streamlit as st

from core.accounts import Account, audit
from pages.widgets.formatting import local_time
from pages.widgets.services import client


def damaged_job_folders(account: Account, admin_dir: Path) -> None:
    """Nothing when every job folder is sound; else the list, and a button that removes them (audited)."""
    store = client().store
    if removed := st.session_state.pop("damaged-removed", None):
        st.success(f"Removed {len(removed)} damaged job folder(s): {', '.join(removed)}.")
    damaged = store.damaged_folders()
    if not damaged:
        return
    st.subheader("Damaged job folders")
    st.warning(
        f"{len(damaged)} folder(s) in the cache's `jobs/` have no readable status. Every job list and lookup "
        "skips them, so other jobs are not affected; look at them (on the server) if you want to know how they "
        "came about, then remove them here."
    )
    st.dataframe(
        [
            {"job": folder.job_id, "what is wrong": folder.reason, "last changed": local_time(folder.modified_at)}
            for folder in damaged
        ],
        hide_index=True,
        use_container_width=True,
    )
    sure = st.checkbox("Delete these folders and what they hold", key="damaged-sure")
    if st.button("Remove the damaged folders", key="damaged-remove", disabled=not sure):
        gone = [folder.job_id for folder in damaged if store.remove_damaged(folder.job_id)]
        audit(admin_dir, account.name, f"removed damaged job folders: {', '.join(gone) or 'none'}")
        st.session_state["damaged-removed"] = gone
        st.rerun()
