"""Everything the generator sends besides the measured requests is counted, and the count is the server's."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from loadgen import prepare, side_requests
from loadgen.options import LoadSettings
from runfolder import read_run
from runfolder.metadata import side_requests_of, side_requests_section
from tests.support.helpers import run_locust_with_stats, send_json, threaded_http_server


@contextmanager
def server_without_tokenize() -> Iterator[tuple[str, Counter]]:
    """A FAKE OpenAI-ish server with no /tokenize (as mlx_lm.server): models, health, and completions that
    answer usage.prompt_tokens of one per word; it counts every request it got by (method, path, status)."""
    got: Counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, doc: dict) -> None:
            got[(self.command, self.path, status)] += 1
            send_json(self, status, doc)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._send(200, {"data": [{"id": "fake-words"}]})
            elif self.path == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._send(404, {"error": {"message": "no such route"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path not in ("/v1/chat/completions", "/v1/completions"):
                self._send(404, {"error": {"message": "no such route"}})
                return
            text = body["messages"][0]["content"] if "messages" in body else body["prompt"]
            usage = {"prompt_tokens": len(text.split()) + 3, "completion_tokens": 1}
            self._send(200, {"choices": [{"text": "x", "finish_reason": "length"}], "usage": usage})

        def log_message(self, *_args) -> None:  # quiet: a passing test prints nothing
            pass

    with threaded_http_server(Handler) as url:
        yield url, got


def test_calibration_and_probes_are_counted_as_the_server_saw_them():
    side_requests.LEDGER.take()  # whatever an earlier test in this process left
    with server_without_tokenize() as (url, got):
        target = prepare.prepare(LoadSettings(prompt_tokens=32), url, {})
        rows = side_requests.LEDGER.take()
    assert target.length_method == "calibrated"
    served = {(m, p, f"http_{status}"): n for (m, p, status), n in got.items()}
    counted: Counter = Counter()
    for row in rows:
        counted[(row["method"], row["path"], row["outcome"])] += row["count"]
    assert counted == served  # every request the server got, and nothing it did not
    section = side_requests_section(rows)
    assert section["by_purpose"]["calibration"] == sum(
        n for (m, path, _s), n in got.items() if m == "POST" and path != "/tokenize"
    ) > 0  # fmt: skip
    assert {r["outcome"] for r in rows if r["purpose"] == "tokenize"} == {"http_404"}  # the probe, refused
    assert section["total"] == sum(got.values())


def test_a_server_that_never_answers_is_counted_as_no_answer():
    side_requests.LEDGER.take()
    status, _doc = prepare._probe("http://127.0.0.1:9/health", {}, 0.5)  # port 9: nothing listens
    assert status == 0
    assert side_requests.LEDGER.take() == [
        {"purpose": "readiness", "method": "GET", "path": "/health", "outcome": "no_answer", "count": 1}
    ]


def test_metadata_sections_add_up_and_old_runs_read_as_none():
    rows = [
        {"purpose": "calibration", "method": "POST", "path": "/v1/completions", "outcome": "http_200",
         "count": 2},
        {"purpose": "calibration", "method": "POST", "path": "/v1/chat/completions", "outcome": "http_200",
         "count": 1},
        {"purpose": "readiness", "method": "GET", "path": "/health", "outcome": "http_200", "count": 1},
    ]  # fmt: skip
    section = side_requests_section(rows)  # type: ignore[arg-type]
    assert section["total"] == 4 and section["by_purpose"] == {"calibration": 3, "readiness": 1}
    assert side_requests_of({"side_requests": section}) == rows
    assert side_requests_of({"label": "before side requests were counted"}) == []


def test_a_run_folder_records_its_side_requests(fake_url, tmp_path):
    """Through Locust: the FAKE answers /tokenize, so prompts are made there and nothing calibrates."""
    run_dir = tmp_path / "side"
    proc = run_locust_with_stats(
        fake_url, run_dir, "-u", "1", "-r", "1", "-t", "2s", "--model", "instant", "--max-tokens", "4"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    section = read_run(run_dir).metadata["side_requests"]
    by_purpose = section["by_purpose"]
    assert by_purpose["readiness"] >= 2 and by_purpose["server_info"] == 2 and by_purpose["tokenize"] >= 1
    assert "calibration" not in by_purpose
    assert all(r["outcome"] == "http_200" for r in section["rows"] if r["purpose"] != "server_metrics")
    assert section["total"] == sum(r["count"] for r in section["rows"])
