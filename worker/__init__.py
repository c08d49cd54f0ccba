"""Orchestration: the job entry point (a list of core stage calls) and the `terraseg` command.

Running jobs on RQ workers arrives with the job system; today `terraseg run` calls `run_job` in-process.
"""
