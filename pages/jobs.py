"""Jobs: your jobs (an admin's: everyone's), newest first, with live progress, filters by state, task and name,
and pages of JOBS_PAGE_SIZE; cancel, retry, delete (after a confirmation), log, results."""

import streamlit as st

from models.catalogue import catalogue
from pages.widgets.job_list import job_filter_ui, job_list
from pages.widgets.services import settings
from pages.widgets.sign_in import account

account()  # a visitor stops here
st.title("Jobs")
job_list(job_filter_ui(catalogue(settings().cache_dir).runnable_tasks()))
