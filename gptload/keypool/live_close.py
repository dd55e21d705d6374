"""What a Live API (WebSocket) refusal says about the key that got it: the close frame's counterpart of ``classify``.

Google refuses a Live session by closing the WebSocket during setup; the close frame's reason is at most 123 bytes,
so Google's longer sentences arrive cut. The policy is HTTP's (``classify``), applied to (code, reason):

=====================================================  ============  ==========================================
close frame from Google before its first message       verdict       effect
=====================================================  ============  ==========================================
1007 + Google's whole key sentence ("API key not        KEY_INVALID   the key is invalid at once; next key
valid. Please pass a valid API key.", "API key
expired. Please renew the API key.", ...; the
SERVICE_DISABLED one, longer than 123 bytes, cut)
1011 + Google's quota sentence ("You exceeded your      QUOTA_MINUTE  the key cools for *that model* (the
current quota..." whole, or cut by the 123-byte limit;                default quota cooldown: a close frame has
optionally prefixed "RESOURCE_EXHAUSTED")                             no RetryInfo); next key
1011 anything else ("Internal error occurred."),        TRANSIENT     nothing on the key; counts toward the
1013, 1014, no close frame (1006), connect errors                     breaker; next key
anything else (1008 "models/x is not found...",         REQUEST_ERROR passed to the client as it came (keys
1007 about the setup, 1000, 1003, 4xxx...)                            scrubbed), no penalty
=====================================================  ============  ==========================================

Every match is anchored on Google's whole sentence (a reason that quotes the client's setup, such as a model name,
never matches). The HTTP answer to a refused handshake is classified by ``classify`` itself. Pure: no I/O.
"""

from __future__ import annotations

import re

from gptload.keypool.classify import Kind, Verdict, key_message_reason

CLOSE_REASON_LIMIT = 123  # bytes: RFC 6455, a control frame's payload is 125 bytes, 2 of them the code

INVALID_PAYLOAD = 1007
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
BAD_GATEWAY = 1014
ABNORMAL = 1006

_QUOTA_SENTENCE = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
_QUOTA_MIN = len("You exceeded your current quota")
_RESOURCE_EXHAUSTED = re.compile(r"^(?:RESOURCE_EXHAUSTED(?::\s*|\s+))?(.*)$", re.DOTALL)
_TRANSIENT_CODES = frozenset({INTERNAL_ERROR, TRY_AGAIN_LATER, BAD_GATEWAY, ABNORMAL, 1012})
# Google's SERVICE_DISABLED sentence is longer than a close frame's reason: its opening whole, then a cut tail.
_SERVICE_DISABLED_HEAD = re.compile(
    r"Generative Language API has not been used in project (\d+) before or it is disabled\.(.*)", re.DOTALL
)
_SERVICE_DISABLED_TAIL = (
    " Enable it by visiting https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/"
    "overview?project={project} then retry. If you enabled this API recently, wait a few minutes for the action to "
    "propagate to our systems and retry."
)


def is_quota_reason(reason: str) -> bool:
    """Is ``reason`` Google's quota sentence: whole, or cut short by the close frame's limit (never less than its
    opening words), optionally after ``RESOURCE_EXHAUSTED``?"""
    if reason.strip() == "RESOURCE_EXHAUSTED":
        return True  # the status alone
    match = _RESOURCE_EXHAUSTED.match(reason.strip())
    text = match.group(1).strip() if match else ""
    return len(text) >= _QUOTA_MIN and _QUOTA_SENTENCE.startswith(text)


def _cut_key_reason(reason: str) -> str:
    """The key reason of Google's sentence that a close frame cut at its limit ("" for anything else): only
    SERVICE_DISABLED is longer than the limit; its opening whole, then exactly the start of its tail."""
    if len(reason.encode("utf-8")) < CLOSE_REASON_LIMIT - 3:  # 3: a cut on a character boundary
        return ""
    match = _SERVICE_DISABLED_HEAD.fullmatch(reason)
    if match is None:
        return ""
    tail = _SERVICE_DISABLED_TAIL.format(project=match.group(1))
    return "SERVICE_DISABLED" if match.group(2) and tail.startswith(match.group(2)) else ""


def classify_close(code: int, reason: str) -> Verdict:
    """Classify Google's close frame received before its first message of a session (see the table above)."""
    label = f"ws {code} {reason}".strip()[:300]
    if code == INVALID_PAYLOAD:
        key_reason = key_message_reason(reason) or _cut_key_reason(reason)
        if key_reason:
            return Verdict(Kind.KEY_INVALID, reason=f"{code} {key_reason}")
        return Verdict(Kind.REQUEST_ERROR, reason=label)
    if code == INTERNAL_ERROR and is_quota_reason(reason):
        return Verdict(Kind.QUOTA_MINUTE, reason=f"{code} RESOURCE_EXHAUSTED (quota)")
    if code in _TRANSIENT_CODES:
        return Verdict(Kind.TRANSIENT, reason=label, network=code == ABNORMAL)
    return Verdict(Kind.REQUEST_ERROR, reason=label)


# How a session ended, as its usage row and ``gptload_live_sessions_ended_total`` say it (``session_outcome``).
SUCCESSFUL_CAUSES = frozenset({"idle_limit", "session_limit", "shutdown"})  # gptload ended a healthy session
FAILED_CAUSES = frozenset({"setup_timeout", "bad_setup", "internal_error", "refused"})
_NORMAL_CODES = frozenset({1000, 1001, 1005})  # normal closure, going away, a close frame without a code


def session_outcome(closer: str, code: int, cause: str = "") -> tuple[str, bool]:
    """(outcome, success) of a Live session from who closed it first (``client``, ``upstream``, ``gptload``), the
    close code, and, when gptload closed it, the cause it gave:

    - the client or Google closing with 1000, 1001 or 1005: ``client_closed`` / ``upstream_closed``, a success;
      any other code (1006 gone without a close frame, 1009 too big, 1011, 4xxx...): ``client_error`` /
      ``upstream_error``, a failure;
    - gptload: 1011 is always ``internal_error`` (a failure); otherwise the cause: its own limits on a healthy
      session (``idle_limit``, ``session_limit``) and ``shutdown`` (1001) are successes; ``setup_timeout``,
      ``bad_setup`` and ``refused`` (no key, a limit, strict mode) failures; no cause is ``refused``;
    - any other closer: ``unknown``, a failure (no caller passes one: the relay always knows who closed first).
    """
    if closer in ("client", "upstream"):
        return (f"{closer}_closed", True) if code in _NORMAL_CODES else (f"{closer}_error", False)
    if closer != "gptload":
        return "unknown", False
    if code == INTERNAL_ERROR:
        return "internal_error", False
    if cause in SUCCESSFUL_CAUSES:
        return cause, True
    return (cause if cause in FAILED_CAUSES else "refused"), False


def cut_reason(reason: str) -> str:
    """``reason`` cut to the close frame's 123 bytes of UTF-8, on a character boundary."""
    data = reason.encode("utf-8")
    if len(data) <= CLOSE_REASON_LIMIT:
        return reason
    return data[:CLOSE_REASON_LIMIT].decode("utf-8", "ignore")
