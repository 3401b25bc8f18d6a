"""Durable batch jobs for the service: submit many posts, poll, stream the results; a killed server resumes.

A job is a directory under the jobs dir (``settings.jobs_dir``, else ``$MENTALGLM_JOBS_DIR``, else
``~/.cache/mentalglm/jobs``), private to the server's user (0700 folder, 0600 files)::

    job.json       id, state, total, options (written atomically at each change of state)
    input.jsonl    the posts, one ``{"id", "text", "line", "error"}`` a line; deleted when the job ends
                   unless ``keep_input`` was asked for (the text is kept only as long as it is needed to resume)
    results.jsonl  one PostResult / ErrorRecord a line, in input order, appended a batch at a time with write,
                   flush, fsync (by the same batch runner as `mentalglm analyze --input`)

Progress is the number of complete lines in results.jsonl, nothing else. On startup a torn last line (a kill
in the middle of a write) is truncated away and the job goes on from the next post: a result written before
the kill is never recomputed nor duplicated, and none is lost. Results carry no post text, as everywhere.

Three modules along the seams: ``store`` (the files and job records), ``worker`` (``JobStore``: the jobs in
memory and the thread that runs them) and ``routes`` (the HTTP router and its lifespan).
"""

from mentalglm.serve.jobs.routes import lifespan, router, store_for
from mentalglm.serve.jobs.store import Job, JobError, default_jobs_dir, recover_results
from mentalglm.serve.jobs.worker import JobStore

__all__ = ["Job", "JobError", "JobStore", "default_jobs_dir", "lifespan", "recover_results", "router", "store_for"]
