"""The daemon's webhook signatures, verified by the Standard Webhooks reference library for
Python (an implementation independent of the daemon's): `secret-rotator send-test-event` POSTs
a CloudEvent to a receiver here, which checks it with `standardwebhooks.Webhook.verify`."""

import base64
import http.server
import json
import os
import subprocess
import threading

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from conftest import binary


class Receiver(http.server.BaseHTTPRequestHandler):
    got = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.got.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.got = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def config(tmp_path, port, key):
    key_file = tmp_path / "webhook-key"
    key_file.write_text(key)
    os.chmod(key_file, 0o600)
    path = tmp_path / "config.toml"
    path.write_text(
        f"""[azure]
tenant_id = "00000000-0000-0000-0000-000000000000"
[azure.credential]
kind = "managed_identity"
[daemon]
instance = "pytest"
[state]
dir = "{tmp_path / 'state'}"
[[events]]
name = "consumer"
kind = "webhook"
url = "http://127.0.0.1:{port}/hooks/secret-rotator"
signing_key_file = "{key_file}"
"""
    )
    return path


@pytest.mark.parametrize("prefix", ["whsec_", ""])
def test_the_reference_library_verifies_a_delivered_event(tmp_path, receiver, prefix):
    key = prefix + base64.b64encode(os.urandom(32)).decode()
    cfg = config(tmp_path, receiver, key)
    run = subprocess.run(
        [binary(), "send-test-event", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "consumer: delivered test event" in run.stdout
    assert len(Receiver.got) == 1
    headers, body = Receiver.got[0]
    headers = {k.lower(): v for k, v in headers.items()}
    event = Webhook(key).verify(body, headers)
    assert event["specversion"] == "1.0"
    assert event["type"] == "com.secret-rotator.test"
    assert event["source"] == "/secret-rotator/pytest"
    assert event["id"] == headers["webhook-id"]
    assert headers["content-type"] == "application/cloudevents+json; charset=utf-8"
    # The check is not vacuous: another key, or a changed body, fails it.
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(key).verify(body.replace(b"pytest", b"pytesT"), headers)


def test_a_sink_that_refuses_makes_the_command_fail(tmp_path):
    # Nothing listens on the port: the command names the sink and exits 1.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cfg = config(tmp_path, port, "whsec_" + base64.b64encode(os.urandom(32)).decode())
    run = subprocess.run(
        [binary(), "send-test-event", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.startswith("consumer: cannot connect"), run.stdout
