"""Run loadgen's request exchange once per case and print the records as JSON lines (test helper).

    python tests/support/exchange_driver.py URL TIMEOUT_S MODEL:PATH:STREAM[:IGNORE_EOS] [...]

Runs in its own process so that gevent stays out of the pytest process. With the environment variable
EXCHANGE_TOKENIZER (a tokenizer folder), output tokens without usage are counted with that tokenizer.
"""

from __future__ import annotations

import json
import os
import sys
import time

from loadgen.transport import Connection, RequestSpec


def main(argv: list[str]) -> int:
    url, timeout_s, cases = argv[0], float(argv[1]), argv[2:]
    conn = Connection(url, timeout_s=timeout_s)
    if os.environ.get("EXCHANGE_TOKENIZER"):
        from loadgen.tokens import LocalTokenizer

        conn.token_counter = LocalTokenizer(os.environ["EXCHANGE_TOKENIZER"])
    for case in cases:
        model, path, stream, *flags = case.split(":")
        conn.ignore_eos = flags == ["1"]
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "prompt": "hi",
            "max_tokens": 4,
        }
        if stream == "1":
            body.update(stream=True, stream_options={"include_usage": True})
        spec = RequestSpec(model, path, json.dumps(body).encode(), stream == "1", 1, 4)
        rec = conn.exchange(spec, scheduled_ts_s=time.time())
        sys.stdout.write(json.dumps(rec.to_dict()) + "\n")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
