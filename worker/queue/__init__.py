"""The queue: RQ and Redis only. The client the web app and the CLI use, the runner that executes a job's record,
and the worker process. Nothing here imports a pipeline: RQ reaches them through the entry table (worker.entry)."""
