"""Job requests, the job store on disk, pre-flight estimates, progress, full disks and reports."""
