"""Alerts for unattended runs: a run that fails, or trains a model the gate does not bless.

Each alert is one line on stderr and in `<work-dir>/logs/alerts.log` (a scheduled run has no
one watching its console) and, with `schedule.webhook_url`, a JSON summary POSTed there
(Slack-style incoming webhooks, an alert manager, a CI hook). A webhook that is down never
fails the run: its error is logged beside the alert.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tlpipe.components.config import PipelineConfig
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
        "work_dir": str(Path(config.work_dir).resolve()),
        "run_id": summary.run_id if summary else None,
        "accuracy": summary.accuracy if summary else None,
        "baseline_accuracy": summary.baseline_accuracy if summary else None,
        "blessed": summary.blessed if summary else None,
        "served_version": served_version(config),
        "verdict_page": summary.verdict_html if summary else None,
        "summary": summary.lines() if summary else [],
    }


def notify(config: PipelineConfig, event: str, message: str,
           summary: RunSummary | None = None) -> dict[str, Any]:
    """Logs the alert line and posts the JSON summary when a webhook is configured."""
    body = payload(config, event, message, summary)
    served = body["served_version"]
    line = (f"tlpipe: ALERT {event}: {config.model_name}: {message}; serving "
            f"{'version ' + str(served) if served is not None else 'nothing'}")
    lines = [line]
    url = config.schedule.webhook_url
    if url:
        try:
            request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
                lines.append(f"tlpipe: alert posted to {url} (HTTP {response.status})")
        except Exception as err:  # an unreachable webhook must not fail the run
            lines.append(f"tlpipe: alert NOT posted to {url}: {type(err).__name__}: {err}")
    log_dir = Path(config.work_dir).resolve() / "logs"
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
