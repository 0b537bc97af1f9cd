"""Alerts for unattended runs: a run that fails, or trains a model the gate does not bless.

Each alert is one line on stderr and in `<work-dir>/logs/alerts.log` (a scheduled run has no
one watching its console) and, with `schedule.webhook_url`, a JSON summary POSTed there
(Slack-style incoming webhooks, an alert manager, a CI hook). A webhook that is down never
fails the run: its error is logged beside the alert.

A webhook URL is a secret (Slack's carries its token in the path, others `user:pass@` or a
`?token=`): logs show only its scheme, host and first path segment; `user:pass@` is sent as a
Basic Authorization header, not in the URL. Only http(s) is posted to, and a redirect is not
followed (urllib would turn the POST into a GET without body) but logged as a failed delivery.
"""
from __future__ import annotations

import base64
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tlpipe.components import storage
from tlpipe.components.config import PipelineConfig
from tlpipe.components.errors import UsageError
from tlpipe.pipeline.summary import RunSummary

FAILED = "failed"
NOT_BLESSED = "not_blessed"
ALERTS_LOG = "alerts.log"
WEBHOOK_TIMEOUT_S = 10


def served_version(config: PipelineConfig) -> int | None:
    """The version TF Serving serves now (the highest), so an alert says what stays live."""
    from tlpipe.serving.layout import versions

    found = versions(config.serving_model_dir)
    return found[-1].number if found else None


def payload(config: PipelineConfig, event: str, message: str,
            summary: RunSummary | None = None) -> dict[str, Any]:
    return {
        "event": event,
        "message": message,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pipeline": config.pipeline_name,
        "model_name": config.model_name,
        "work_dir": storage.absolute(config.work_dir),
        "run_id": summary.run_id if summary else None,
        "accuracy": summary.accuracy if summary else None,
        "baseline_accuracy": summary.baseline_accuracy if summary else None,
        "blessed": summary.blessed if summary else None,
        "served_version": served_version(config),
        "verdict_page": summary.verdict_html if summary else None,
        "summary": summary.lines() if summary else [],
    }


class WebhookURLError(UsageError):
    """A webhook URL that is not http(s) with a host; the message shows the URL redacted."""


def redact_url(url: str) -> str:
    """Scheme, host (and port) and the first path segment: what a log may show of a webhook."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed port
        return "<malformed URL>"
    segments = [s for s in parts.path.split("/") if s]
    head = f"/{segments[0]}" if segments else ""
    more = "/…" if len(segments) > 1 or parts.query or parts.fragment else ""
    if not parts.scheme or not host:
        return "<URL without scheme or host>"
    return f"{parts.scheme}://{host}{port}{head}{more}"


def check_webhook_url(url: str) -> None:
    """Raises WebhookURLError unless `url` is http(s)://host...: no file://, ftp:// or data:."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed [IPv6 literal
        raise WebhookURLError(f"webhook URL {redact_url(url)} is malformed") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise WebhookURLError(f"webhook URL {redact_url(url)} must be http:// or https:// with a host")


class _RedirectIsAFailure(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError(3xx): a failed delivery


def _scrub(text: str, url: str) -> str:
    """An error message with every secret-bearing part of the URL taken out."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(details withheld: malformed URL)"
    secrets = [url, parts.netloc, parts.path, parts.query, parts.password, parts.username]
    for secret in sorted((s for s in secrets if s and len(s) > 1), key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text


def post_json(url: str, body: dict[str, Any]) -> str:
    """POSTs `body` to the webhook; returns the log line saying whether it was delivered."""
    shown = redact_url(url)
    try:
        check_webhook_url(url)
        parts = urllib.parse.urlsplit(url)
        headers = {"Content-Type": "application/json"}
        if parts.username is not None:  # credentials travel in a header, not in the URL
            credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        request = urllib.request.Request(urllib.parse.urlunsplit(parts), data=json.dumps(body).encode(),
                                         method="POST", headers=headers)
        with urllib.request.build_opener(_RedirectIsAFailure).open(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            return f"tlpipe: alert posted to {shown} (HTTP {response.status})"
    except urllib.error.HTTPError as err:
        err.close()
        why = " (a redirect: not followed)" if 300 <= err.code < 400 else ""
        return f"tlpipe: alert NOT posted to {shown}: HTTP {err.code}{why}"
    except Exception as err:  # an unreachable webhook must not fail the run
        return f"tlpipe: alert NOT posted to {shown}: {type(err).__name__}: {_scrub(str(err), url)}"


def notify(config: PipelineConfig, event: str, message: str,
           summary: RunSummary | None = None) -> dict[str, Any]:
    """Logs the alert line and posts the JSON summary when a webhook is configured."""
    body = payload(config, event, message, summary)
    served = body["served_version"]
    line = (f"tlpipe: ALERT {event}: {config.model_name}: {message}; serving "
            f"{'version ' + str(served) if served is not None else 'nothing'}")
    lines = [line]
    if config.schedule.webhook_url:
        lines.append(post_json(config.schedule.webhook_url, body))
    log_dir = Path(config.logs_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / ALERTS_LOG, "a") as fh:
        for text in lines:
            fh.write(f"{body['time']} {text}\n")
    for text in lines:
        print(text, file=sys.stderr, flush=True)
    return body


def notify_outcome(config: PipelineConfig, summary: RunSummary | None) -> None:
    """After a run that completed: alert when its model was not blessed."""
    if summary is None or summary.blessed is not False:
        return
    failed = [line.strip() for line in summary.lines() if line.strip().startswith("FAIL")]
    notify(config, NOT_BLESSED, f"run {summary.run_id} trained a model the gate did not bless"
           + (f" ({'; '.join(failed)})" if failed else ""), summary)
