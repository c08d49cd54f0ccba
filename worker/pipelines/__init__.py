"""The pipelines: the map job, the crop job, chunked passes and training runs, each the list of its stage calls
into core and models. They know nothing of Redis except the chunked job, which queues its chunk passes."""
