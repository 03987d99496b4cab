"""server_metrics.csv: the writer and both readers agree; malformed files are named; the client's counts."""

from __future__ import annotations

import json
import math

import pytest

from runfolder import SERVER_METRICS_FILE, RunFolderError, Sample, read_server_metrics, write_server_metrics
from runfolder.frame import read_server_metrics_frame
from runfolder.server_metrics import client_counts

SAMPLES = [
    Sample(1_700_000_000.25, "mlxserving_requests_total", 3.0, {"endpoint": "chat", "outcome": "success"}),
    Sample(1_700_000_000.25, "odd_labels", 1.5, {"path": 'a,b "quoted"\nline'}),
    Sample(1_700_000_001.25, "no_labels", float("inf")),
    Sample(1_700_000_001.25, "not_a_number", float("nan")),
]


def test_samples_round_trip_through_both_readers(tmp_path):
    path = tmp_path / SERVER_METRICS_FILE
    assert write_server_metrics(path, SAMPLES) == len(SAMPLES)
    back = read_server_metrics(path)
    assert [(s.ts_s, s.name, s.labels) for s in back] == [(s.ts_s, s.name, s.labels) for s in SAMPLES]
    assert back[0].value == 3.0 and back[2].value == math.inf and math.isnan(back[3].value)
    frame = read_server_metrics_frame(tmp_path)
    assert frame is not None
    assert list(frame.columns) == ["ts_s", "name", "labels", "value"]
    assert list(frame["name"]) == [s.name for s in SAMPLES]
    assert frame["labels"].iloc[2] == ""  # no labels: an empty cell, not a missing value
    assert json.loads(frame["labels"].iloc[1]) == SAMPLES[1].labels


def test_a_run_folder_without_the_file_has_no_frame(tmp_path):
    assert read_server_metrics_frame(tmp_path) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a,b,c\n1,2,3\n", "not a server metrics file"),
        ("ts_s,name,labels,value\nnoon,x,,1\n", ":2: malformed sample"),
        ('ts_s,name,labels,value\n1,x,{"bad,1\n', ":2: malformed sample"),
    ],
)
def test_malformed_files_are_named(tmp_path, text, problem):
    path = tmp_path / SERVER_METRICS_FILE
    path.write_text(text)
    with pytest.raises(RunFolderError, match=problem) as caught:
        read_server_metrics(path)
    assert str(path) in str(caught.value)


def test_client_counts_what_the_server_can_know():
    outcomes = ["success", "success", "rejected", "timeout", "timeout", "timeout", "error", "cut"]
    details = ["ok", "ok", "http_429", "queue_timeout", "request_timeout", "client_deadline", "http_500", ""]
    tokens = [10.0, float("nan"), None, None, None, None, None, None]
    counts = client_counts(outcomes, details, tokens)
    assert counts == {
        "requests": 8,
        "successes": 2,
        "rejections": 1,
        "timeouts": 2,  # the client's own deadline is not a timeout the server saw
        "queue_timeouts": 1,
        "output_tokens": 10,  # a success without a token count adds nothing
    }
