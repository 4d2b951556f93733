"""The one HTTP client of the GPT judges: a chat completion from any OpenAI-compatible endpoint.

Used by `gpt_judge` (MM-Vet, LLaVA-Bench) and `eval_video_qa` (the video-QA judge). The endpoint is
`base_url` + `/chat/completions` (OpenAI by default, or any local server speaking the same API). The
key is read from an environment variable at call time; it only ever goes into the request's
Authorization header, and any text shown to the user has it masked. Standard library only.

Errors are `JudgeError` (a `UserError`, so commands print one line, and a `RuntimeError`):
- a refused key (HTTP 401/403) or a bad request (other 4xx except 429) stops at once;
- rate limits (429), server errors (5xx) and network errors are retried with exponential back-off,
  then stop with the last problem named.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

from llava.cli_errors import UserError

OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"


class JudgeError(UserError, RuntimeError):
    """The judge endpoint could not give an answer (the message names the endpoint and the cause)."""


def default_base_url() -> str:
    """OPENAI_BASE_URL when set, else OpenAI's own endpoint."""
    return os.environ.get(BASE_URL_ENV, "").strip() or OPENAI_URL


def api_key(env: str = DEFAULT_KEY_ENV, required: bool = True) -> str | None:
    """The key from environment variable `env`; missing: a JudgeError when `required`, else None."""
    key = os.environ.get(env, "").strip()
    if not key and required:
        raise JudgeError(f"{env} is not set; export it to use the GPT judge")
    return key or None


class RateLimiter:
    """At most `per_minute` calls a minute: `wait()` sleeps until the next call may start (None: no limit)."""

    def __init__(self, per_minute: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if per_minute is not None and per_minute <= 0:
            raise ValueError(f"requests per minute must be > 0, got {per_minute}")
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.clock, self.sleep = clock, sleep
        self._next = None

    def wait(self) -> None:
        if not self.interval:
            return
        now = self.clock()
        if self._next is not None and now < self._next:
            self.sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


@dataclass
class ChatEndpoint:
    """Where and how to ask: the endpoint, the model, the key's variable, retries and the rate limit.

    `key_required=False` lets a local server without authentication be used (no Authorization header).
    """

    model: str
    base_url: str = field(default_factory=default_base_url)
    key_env: str = DEFAULT_KEY_ENV
    key_required: bool = True
    retries: int = 3
    timeout: float = 120.0
    backoff: float = 1.0  # seconds before the first retry; doubled each time
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(None))

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def check_key(self) -> None:
        """Fail before any work when the key is required and missing."""
        api_key(self.key_env, self.key_required)

    def chat(self, messages: list[dict], max_tokens: int = 512, temperature: float = 0.0) -> str:
        """The reply text of one chat completion ("" when the reply has no text content)."""
        key = api_key(self.key_env, self.key_required)
        body = json.dumps({"model": self.model, "messages": messages, "temperature": temperature,
                           "max_tokens": max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        problem = "no attempt made"
        for attempt in range(max(1, self.retries)):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.limiter.wait()
            try:
                with urllib.request.urlopen(urllib.request.Request(self.url, body, headers),
                                            timeout=self.timeout) as resp:
                    payload = resp.read()
            except urllib.error.HTTPError as err:
                if err.code in (401, 403):  # no body shown: a refusal may quote part of the key
                    raise JudgeError(f"HTTP {err.code} from {self.url}: the key in {self.key_env} was refused "
                                     "(check it, or the endpoint)") from None
                detail = _masked(_body_of(err), key)
                if 400 <= err.code < 500 and err.code != 429:
                    raise JudgeError(f"HTTP {err.code} from {self.url} for model {self.model!r}{detail}; "
                                     "check --judge-model and --judge-base-url") from None
                problem = f"HTTP {err.code} from {self.url}{detail}"
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                problem = f"network error for {self.url}: {_masked(str(getattr(err, 'reason', err)), key)}"
                continue
            return _reply_text(payload, self.url)
        raise JudgeError(f"the judge failed after {max(1, self.retries)} tries: {problem}; rerun to resume")


def _body_of(err: urllib.error.HTTPError) -> str:
    try:
        text = err.read().decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001 (the body is a courtesy; the status code is the error)
        return ""
    return f" ({text[:200]})" if text else ""


def _masked(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text


def _reply_text(payload: bytes, url: str) -> str:
    """choices[0].message.content of a chat-completion response; a response of another shape is an error."""
    try:
        content = json.loads(payload)["choices"][0]["message"].get("content")
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise JudgeError(f"{url} answered with something that is not a chat completion "
                         f"({payload[:120]!r}); is --judge-base-url an OpenAI-compatible /v1 endpoint?") from None
    return content if isinstance(content, str) else ""
