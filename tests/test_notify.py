"""Webhook alerts against a real loopback HTTP server: secrets never logged, credentials in a
header, http(s) only, and a redirect counted as a failed delivery (not followed as a GET)."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tlpipe.pipeline.notify import FAILED, WebhookURLError, check_webhook_url, notify, post_json, redact_url

SECRETS = ("alice", "s3cr", "B0SECRET", "XXTOKENXX", "tok123")


@pytest.fixture
def server():
    """Answers 200 on /ok..., 302 to /ok on /moved..., 500 elsewhere; records every request."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            received.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                             "body": self.rfile.read(length)})
            if self.path.startswith("/ok"):
                self.send_response(200)
            elif self.path.startswith("/moved"):
                self.send_response(302)
                self.send_header("Location", "/ok/after-redirect")
            else:
                self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}", received
    httpd.shutdown()
    httpd.server_close()


def test_credentials_go_in_a_header_and_no_secret_is_logged(server, tmp_path, capfd):
    from tlpipe.components.config_loading import load_config

    host, received = server
    url = f"http://alice:s3cr%40t@{host}/ok/services/T0/B0SECRET/XXTOKENXX?token=tok123"
    config = load_config(None, [f"schedule.webhook_url={url}"], work_dir=str(tmp_path))
    notify(config, FAILED, "run failed: ValueError: boom")

    [request] = received
    assert request["method"] == "POST"
    assert request["path"] == "/ok/services/T0/B0SECRET/XXTOKENXX?token=tok123"
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cr@t").decode()
    assert json.loads(request["body"])["event"] == FAILED
    logged = capfd.readouterr().err + (tmp_path / "logs" / "alerts.log").read_text()
    assert f"tlpipe: alert posted to http://{host}/ok/… (HTTP 200)" in logged, logged
    for secret in SECRETS:
        assert secret not in logged, secret


def test_a_redirect_is_a_failed_delivery_and_is_not_followed(server):
    host, received = server
    line = post_json(f"http://{host}/moved/B0SECRET/XXTOKENXX", {"event": FAILED})
    assert line == f"tlpipe: alert NOT posted to http://{host}/moved/…: HTTP 302 (a redirect: not followed)"
    assert [(r["method"], r["path"]) for r in received] == [("POST", "/moved/B0SECRET/XXTOKENXX")]


def test_server_errors_and_unreachable_hosts_are_failed_deliveries_without_secrets(server):
    host, received = server
    assert post_json(f"http://{host}/broken/XXTOKENXX", {}) == \
        f"tlpipe: alert NOT posted to http://{host}/broken/…: HTTP 500"
    line = post_json("http://alice:s3cret@nonexistent.invalid/hooks/XXTOKENXX?token=tok123", {})
    assert line.startswith("tlpipe: alert NOT posted to http://nonexistent.invalid/hooks/…: URLError"), line
    for secret in SECRETS:
        assert secret not in line, line


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "data:,hello",
                                 "gopher://127.0.0.1:70/x", "http:///no-host", "127.0.0.1:8080/hook"])
def test_only_http_and_https_are_posted_to(url, server):
    _, received = server
    with pytest.raises(WebhookURLError, match="must be http:// or https://"):
        check_webhook_url(url)
    line = post_json(url, {"event": FAILED})
    assert line.startswith("tlpipe: alert NOT posted to ") and "WebhookURLError" in line, line
    assert "passwd" not in line and received == []


@pytest.mark.parametrize("url, shown", [
    ("https://hooks.slack.com/services/T000/B000/XXXX", "https://hooks.slack.com/services/…"),
    ("https://user:pw@alerts.example.com:8443/hook?token=abc", "https://alerts.example.com:8443/hook/…"),
    ("http://127.0.0.1:9/hook", "http://127.0.0.1:9/hook"),
    ("https://example.com", "https://example.com"),
    ("http://example.com:notaport/x", "<malformed URL>"),
    ("file:///etc/passwd", "<URL without scheme or host>"),
])
def test_redaction_keeps_scheme_host_and_path_head_only(url, shown):
    assert redact_url(url) == shown


def test_the_scheduler_logs_its_runs_command_with_the_webhook_redacted():
    from tlpipe.pipeline.schedule import shown_command

    shown = shown_command(["python", "-m", "tlpipe.pipeline.cli", "run", "--set",
                           "schedule.webhook_url=https://alice:s3cret@hooks.example.com/services/B0SECRET",
                           "--set", "trainer.phase1_epochs=3"])
    assert "schedule.webhook_url=https://hooks.example.com/services/…" in shown
    assert "trainer.phase1_epochs=3" in shown
    for secret in SECRETS:
        assert secret not in shown
