"""Starts the real `secret-rotator emulator` binary and seeds it through its control API."""

import json
import os
import pathlib
import subprocess
import uuid

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPECS = ROOT / "tests" / "data" / "specs"


def binary():
    path = os.environ.get("SECRET_ROTATOR_BIN") or str(ROOT / "target" / "debug" / "secret-rotator")
    if not os.path.exists(path):
        pytest.fail(f"{path} does not exist: build with `cargo build` first (or set SECRET_ROTATOR_BIN)")
    return path


class Emulator:
    def __init__(self, info, process):
        self.info = info
        self.process = process
        self.ca = info["ca_file"]
        self.control = info["control_url"]
        self.http = requests.Session()
        self.http.verify = self.ca
        self.http.trust_env = False

    def seed(self, seed):
        r = self.http.post(f"{self.control}/control/seed", json=seed)
        assert r.status_code == 200, r.text
        return r.json()

    def settings(self, **changes):
        s = self.http.get(f"{self.control}/control/settings").json()
        s.update(changes)
        r = self.http.put(f"{self.control}/control/settings", json=s)
        assert r.status_code == 204, r.text

    def throttling(self, **changes):
        s = self.http.get(f"{self.control}/control/settings").json()
        s["throttling"].update(changes)
        r = self.http.put(f"{self.control}/control/settings", json=s)
        assert r.status_code == 204, r.text

    def fault(self, **rule):
        r = self.http.post(f"{self.control}/control/faults", json=rule)
        assert r.status_code == 204, r.text

    def journal(self):
        return self.http.get(f"{self.control}/control/journal").json()

    def operations(self):
        return self.http.get(f"{self.control}/control/operations").json()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    state = tmp_path_factory.mktemp("emulator")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    process = subprocess.Popen(
        [binary(), "emulator", "--listen", "127.0.0.1:0", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = process.stdout.readline()
    assert line, "the emulator printed no start line"
    em = Emulator(json.loads(line), process)
    yield em
    process.terminate()
    process.wait(timeout=10)


def new_id():
    return str(uuid.uuid4())
