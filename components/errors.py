"""The one base of tlpipe's own errors, so `tlpipe` reports each as one line from one place."""


class TlpipeError(Exception):
    """A failure tlpipe explains in one line. `exit_code`: 2 for bad usage or settings (nothing
    ran), 1 for a run or action that failed."""

    exit_code = 1


class UsageError(TlpipeError, ValueError):
    """Bad command-line usage or settings, caught before anything runs."""

    exit_code = 2
