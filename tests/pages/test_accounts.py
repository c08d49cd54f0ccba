"""Accounts in the web app (AppTest, real redis-server and workers): a visitor gets the sign-in form and nothing
else; a wrong password is refused and repeated failures make the name wait; users see and touch only their own jobs
while an admin sees all; no configured account or sign-in turned off each say so on the page."""

from urllib.parse import parse_qs

import pytest

from core.accounts import FREE_FAILURES, Account, NotYourJob, read_audit
from core.config import get_settings
from tests.pages.test_pages import (  # noqa: F401 (app_env: fixture)
    PASSWORDS,
    app_env,
    assert_no_crash,
    job_markdown,
    open_page,
    sign_in,
    submit_button,
    texts,
)
from tests.services import large_spec, sample_spec

pytestmark = pytest.mark.usefixtures(
    "app_env"
)  # the app on the test's Redis and cache, with PASSWORDS' accounts


def test_a_visitor_sees_only_the_sign_in_form_and_repeated_failures_make_the_name_wait(settings, client):
    client.submit(sample_spec())  # a job exists: a visitor must learn nothing about it
    at = open_page("pages/jobs.py", account=None)
    assert_no_crash(at)
    assert [t.value for t in at.title] == ["Sign in to TerraSeg"]
    assert not at.sidebar.markdown and not at.get("page_link")  # no navigation, no queue or job counts
    at = sign_in(at, "analyst", "not the password")
    assert texts(at.error) == ["Wrong name or password."]
    at = sign_in(at, "nobody", PASSWORDS["analyst"])  # an unknown name: the same sentence
    assert texts(at.error) == ["Wrong name or password."]
    for _ in range(FREE_FAILURES - 1):
        at = sign_in(at, "analyst", "still not it")
    assert texts(at.error)[0] == "Wrong name or password. Wait 1 s before the next try."
    at = sign_in(at, "analyst")  # the right password, but this visitor must wait a moment for this name
    assert texts(at.error)[0].startswith("Too many failed sign-ins from here; try again in")
    assert [t.value for t in at.title] == ["Sign in to TerraSeg"]
    at = sign_in(at, "other")  # another name does not wait
    assert_no_crash(at)
    assert "Signed in as **other**" in texts(at.sidebar.markdown)
    actions = [(e["who"], e["action"]) for e in read_audit(settings.cache_dir / "admin")]
    assert actions[0] == ("other", "signed in") and ("analyst", "sign-in refused: throttled (1 s to wait)") in actions
    assert ("unknown name", "failed sign-in (1 in a row)") in actions
    assert PASSWORDS["analyst"] not in (settings.cache_dir / "admin" / "audit.log").read_text()
    next(b for b in at.sidebar.button if b.label == "Sign out").click()
    at = at.run()
    assert [t.value for t in at.title] == ["Sign in to TerraSeg"]


def test_users_see_cancel_and_delete_only_their_own_jobs_and_an_admin_sees_all(
    settings, client, large_source
):
    mine = client.submit(large_spec(large_source), owner="analyst", name="Ljubljana clouds")
    theirs = client.submit(sample_spec(), owner="other")
    from_cli = client.submit(sample_spec(start="2015-08-01"))
    at = open_page("pages/jobs.py", account="analyst")
    assert_no_crash(at)
    assert "Ljubljana clouds" in job_markdown(at, mine)
    shown = " ".join(texts(at.markdown))
    assert theirs not in shown and from_cli not in shown
    assert not [b for b in at.button if theirs in str(b.key)]
    assert "Your jobs queued: **1**  \nYour jobs running: **0**" in texts(at.sidebar.markdown)
    # The client refuses another user's job whatever a page offers.
    for act in (client.cancel, client.retry, client.delete, client.logs):
        with pytest.raises(NotYourJob, match="not one of yours"):
            act(theirs, Account("analyst"))
    assert client.status(theirs).state == "queued"
    results = open_page("pages/results.py", account="analyst")
    assert any("No finished job yet" in t for t in texts(results.info))  # the others' jobs are not offered
    admin = open_page("pages/jobs.py", account="admin")
    for job_id, owner in ((mine, "by analyst"), (theirs, "by other"), (from_cli, "by the command line")):
        assert owner in job_markdown(admin, job_id)
    assert "All jobs queued: **3**  \nAll jobs running: **0**" in texts(admin.sidebar.markdown)
    next(b for b in admin.button if b.key == f"cancel-{theirs}").click()
    admin.run()
    assert client.status(theirs).state == "cancelled"


def test_a_job_submitted_on_the_page_belongs_to_its_user_with_its_name(settings, client, monkeypatch):
    import json

    from tests.pages.test_pages import SAMPLE_AOI_TEXT

    drawn = {"type": "Feature", "properties": {}, "geometry": json.loads(SAMPLE_AOI_TEXT)}
    at = open_page("pages/new_job.py", drawn, monkeypatch, account="analyst")
    next(t for t in at.text_input if t.label == "Job name (optional)").input("July clouds")
    submit_button(at).click()
    at.run()
    assert_no_crash(at)
    [job] = client.list_jobs()
    assert (job.owner, job.name) == ("analyst", "July clouds")
    # The same request by another user is their own job, not an answer with the analyst's.
    other = open_page("pages/new_job.py", drawn, monkeypatch, account="other")
    submit_button(other).click()
    other.run()
    assert sorted(s.owner for s in client.list_jobs()) == ["analyst", "other"]
    assert [s.owner for s in client.list_jobs(Account("other"))] == ["other"]


def test_without_an_account_the_app_says_how_to_make_one_and_offers_nothing(settings, monkeypatch):
    monkeypatch.delenv("TERRASEG_ACCOUNTS_FILE")
    monkeypatch.setenv("TERRASEG_ACCOUNTS_FILE", str(settings.cache_dir / "missing.toml"))
    get_settings.cache_clear()
    at = open_page("pages/new_job.py", account=None)
    assert_no_crash(at)
    assert any("No account is set up" in t and "terraseg account NAME" in t for t in texts(at.info))
    assert not at.text_input and not at.button and not at.sidebar.markdown


def test_sign_in_turned_off_says_so_on_every_page(settings, client, monkeypatch):
    monkeypatch.setenv("TERRASEG_APP_SIGN_IN", "false")
    get_settings.cache_clear()
    job_id = client.submit(sample_spec())  # from the command line: the desktop's one user sees it
    at = open_page("pages/jobs.py")
    assert_no_crash(at)
    assert any("Sign-in is off" in t for t in texts(at.sidebar.warning))
    assert "by the command line" in job_markdown(at, job_id)
    admin = at.switch_page("pages/admin.py").run()  # the desktop's user is its admin
    assert_no_crash(admin)
    assert any("Train a model" in t for t in texts(admin.subheader))


def test_terraseg_account_prints_a_table_the_app_signs_in_with(tmp_path):
    """The operator's way to add an account: the printed table, pasted into the accounts file, signs in; the
    password itself is nowhere in it. Bad names, short passwords and damaged tables are each a sentence."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from core.accounts import SignInGate
    from core.config import Settings, account_entries

    root = Path(__file__).resolve().parents[2]

    def account(*args: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker", "account", *args],
            input=password + "\n",
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(root)},
            timeout=60,
        )

    made = account("alice", "--admin", password="alice's long password")
    assert made.returncode == 0, made.stderr
    assert (
        made.stdout.startswith('[accounts.alice]\npassword_hash = "$argon2id$')
        and "alice's" not in made.stdout
    )
    refused = account("Alice Smith", password="alice's long password")
    assert refused.returncode == 2 and "lowercase letters" in refused.stderr and not refused.stdout
    short = account("bob", password="short")
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    accounts_file = tmp_path / "accounts.toml"
    accounts_file.write_text(
        made.stdout
        + '[accounts.carol]\nrole = "user"\n'  # no hash
        + '[accounts.dave]\npassword_hash = "$argon2id$x"\nrole = "owner"\n'  # an unknown role
    )
    entries, problems = account_entries(Settings(accounts_file=accounts_file), secrets_files=())
    assert list(entries) == ["alice"] and entries["alice"].role == "admin"
    assert len(problems) == 2 and "carol" in problems[0] and "role must be" in problems[1]
    signed_in = SignInGate(entries, tmp_path / "admin").sign_in("alice", "alice's long password")
    assert signed_in.is_admin
    accounts_file.write_text("[accounts.alice\n")  # damaged: a sentence, no account, no crash
    entries, problems = account_entries(Settings(accounts_file=accounts_file), secrets_files=())
    assert not entries and "not valid TOML" in problems[0]


def test_jobs_are_named_filtered_paged_and_open_their_results_with_a_link(settings, client, start_worker):
    """25 jobs of a user: filters by state, task and name; pages of 20; a finished job's thumbnail and its
    Open results link, which opens that job on the Results page."""
    from pages.widgets.job_list import JOBS_PAGE_SIZE as PAGE_SIZE
    from tests.pages.test_pages import rerun_until
    from tests.services import wait_for

    start_worker()
    finished = client.submit(sample_spec(), owner="analyst", name="July clouds")
    wait_for(client, finished, ("finished",))
    with_others = [finished]
    for day in range(1, 25):  # queued behind nothing: a worker takes them one by one; states vary
        with_others.append(
            client.submit(sample_spec(start=f"2015-07-{day:02d}"), owner="analyst", name=f"n{day}")
        )
    at = open_page("pages/jobs.py", account="analyst")
    assert_no_crash(at)
    assert any(n.label.startswith("Page (of 2") for n in at.number_input)
    shown = [m for m in texts(at.markdown) if "· analyst" not in m and any(j in m for j in with_others)]
    assert len(shown) == PAGE_SIZE
    next(m for m in at.multiselect if m.label == "State").set_value(["finished"])
    at = at.run()
    done = [j for j in with_others if client.status(j).state == "finished"]
    assert [j for j in with_others if any(j in t for t in texts(at.markdown))] == done
    assert len(at.get("image")) == len(done)  # each finished job's thumbnail
    next(t for t in at.text_input if t.label == "Name or id contains").set_value("july")
    at = at.run()
    assert [j for j in with_others if any(j in t for t in texts(at.markdown))] == [finished]
    next(m for m in at.multiselect if m.label == "Task").set_value(["landcover"])
    at = at.run()
    assert any("No job matches the filters" in t for t in texts(at.info))
    next(m for m in at.multiselect if m.label == "Task").set_value(["cloud"])
    at = at.run()
    # Open results is a link (the browser follows it: tests/pages/test_browser.py); here it names the page and
    # the job, and the Results page opened with that job shows it.
    (link,) = [link for link in at.page_link if link.value == "Open results"]
    assert link.proto.page == "results" and parse_qs(link.proto.query_string) == {"job": [finished]}
    at.query_params["job"] = finished
    at.switch_page("pages/results.py")
    at = rerun_until(at.run(), lambda a: [t.value for t in a.title] == ["Results"], timeout_s=30)
    assert at.selectbox[0].value == finished and "July clouds" in at.selectbox[0].format_func(finished)
