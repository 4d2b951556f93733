"""A local OpenAI-compatible /v1/chat/completions stand-in for the judge tests (never the network).

`FakeJudge(reply)` serves in a thread; `reply(body, n)` gets the request's JSON body and its 1-based
request number and returns the reply text, or an int HTTP status to fail with. Every request's
headers and body are kept in `requests`.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from typing import Callable


class FakeJudge:
    def __init__(self, reply: Callable[[dict, int], str | int]) -> None:
        self.reply = reply
        self.requests: list[dict] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                out = owner.reply(body, len(owner.requests))
                if isinstance(out, int):
                    self.send_response(out)
                    payload = b'{"error": {"message": "fake failure"}}'
                else:
                    self.send_response(200)
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": out}}]}).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeJudge":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def field(body: dict, name: str) -> str:
    """The value after `<name>:` in the user message of a judge request (our prompt's layout), up to the
    next field or blank line, so a prediction of several lines is read whole."""
    user = body["messages"][-1]["content"]
    match = re.search(rf"^{re.escape(name)}: (.*?)(?=\n[A-Z][a-z ]+: |\n\n|\Z)", user, re.MULTILINE | re.DOTALL)
    return match.group(1) if match else ""


def exact_match_judge(body: dict, n: int) -> str:
    """yes/5 when the prediction equals the correct answer, else no/1."""
    same = field(body, "Predicted answer").strip().lower() == field(body, "Correct answer").strip().lower()
    return "{'pred': 'yes', 'score': 5}" if same else "{'pred': 'no', 'score': 1}"
