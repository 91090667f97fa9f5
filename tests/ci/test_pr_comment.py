"""The Azure Pipelines PR-comment script (.azure-pipelines/scripts/pr_comment.py) against a local server.

A real HTTP server on 127.0.0.1 stands in for the Azure DevOps REST API and records what it gets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from cicd_helpers import AZURE_DIR, REPO

SCRIPT = AZURE_DIR / "scripts" / "pr_comment.py"


class _Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []
    status: ClassVar[int] = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(
            {
                "path": self.path,
                "auth": self.headers["Authorization"],
                "type": self.headers["Content-Type"],
                "body": json.loads(body),
            }
        )
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"id": 42} if type(self).status == 200 else {"message": "denied"}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Recorder.received = []
    _Recorder.status = 200
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _env(port: int) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "SYSTEM_COLLECTIONURI": f"http://127.0.0.1:{port}/my org/",
        "SYSTEM_TEAMPROJECTID": "proj-id",
        "BUILD_REPOSITORY_ID": "repo-id",
        "SYSTEM_PULLREQUEST_PULLREQUESTID": "17",
        "SYSTEM_ACCESSTOKEN": "job-token",
    }


def _run(args, env):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], check=False, env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )


def test_posts_the_preview_as_a_closed_thread(server, tmp_path):
    preview = tmp_path / "pulumi preview.txt"
    preview.write_text(
        "Previewing update (dev)\n  + azure-native:storage:StorageAccount data create\nResources:\n    + 1 to create\n"
    )
    r = _run(["--title", "pulumi preview (dev)", str(preview)], _env(server.server_address[1]))
    assert r.returncode == 0, r.stderr
    assert "posted comment thread 42 on pull request 17" in r.stdout
    (req,) = _Recorder.received
    assert req["path"] == "/my%20org/proj-id/_apis/git/repositories/repo-id/pullRequests/17/threads?api-version=7.1"
    assert req["auth"] == "Bearer job-token" and req["type"] == "application/json"
    assert req["body"]["status"] == "closed"
    (comment,) = req["body"]["comments"]
    assert comment["parentCommentId"] == 0 and comment["commentType"] == 1
    assert comment["content"].startswith("### pulumi preview (dev)\n")
    assert "+ 1 to create" in comment["content"]


def test_long_output_keeps_its_end_and_says_it_was_cut(server, tmp_path):
    preview = tmp_path / "preview.txt"
    preview.write_text("x" * 70_000 + "\nResources: 3 to update\n")
    r = _run([str(preview)], _env(server.server_address[1]))
    assert r.returncode == 0, r.stderr
    content = _Recorder.received[0]["body"]["comments"][0]["content"]
    assert "Resources: 3 to update" in content and "characters cut" in content
    assert len(content) < 61_000


def test_missing_variables_and_refusals_are_reported(server, tmp_path):
    preview = tmp_path / "preview.txt"
    preview.write_text("ok\n")
    env = _env(server.server_address[1])
    del env["SYSTEM_ACCESSTOKEN"]
    r = _run([str(preview)], env)
    assert r.returncode == 2 and "SYSTEM_ACCESSTOKEN" in r.stderr
    _Recorder.status = 403
    r = _run([str(preview)], _env(server.server_address[1]))
    assert r.returncode == 6 and "HTTP 403" in r.stderr and "denied" in r.stderr
    r = _run([str(tmp_path / "absent.txt")], _env(server.server_address[1]))
    assert r.returncode == 2 and "absent.txt" in r.stderr
