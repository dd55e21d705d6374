"""How a Live session's end is recorded (``session_outcome``): its usage row's ``success`` and the outcome label that
the row's summary and ``gptload_live_sessions_ended_total`` carry, from who closed, the close code, and the cause
gptload gave when it closed itself."""

from __future__ import annotations

import pytest

from gptload.keypool.live_close import session_outcome


@pytest.mark.parametrize(
    ("closer", "code", "cause", "expected"),
    [
        ("client", 1000, "", ("client_closed", True)),
        ("client", 1001, "", ("client_closed", True)),
        ("client", 1005, "", ("client_closed", True)),  # a close frame without a code
        ("client", 4001, "", ("client_error", False)),
        ("client", 1006, "", ("client_error", False)),  # gone without a close frame
        ("client", 1009, "", ("client_error", False)),  # a message over the limit
        ("upstream", 1000, "", ("upstream_closed", True)),
        ("upstream", 1001, "", ("upstream_closed", True)),
        ("upstream", 1011, "", ("upstream_error", False)),
        ("upstream", 1008, "", ("upstream_error", False)),
        ("upstream", 1006, "", ("upstream_error", False)),  # the connection to Google was lost
        ("gptload", 1011, "internal_error", ("internal_error", False)),
        ("gptload", 1011, "", ("internal_error", False)),  # whatever the cause says, 1011 is gptload's failure
        ("gptload", 1008, "setup_timeout", ("setup_timeout", False)),
        ("gptload", 1007, "bad_setup", ("bad_setup", False)),
        ("gptload", 1008, "idle_limit", ("idle_limit", True)),
        ("gptload", 1008, "session_limit", ("session_limit", True)),
        ("gptload", 1001, "shutdown", ("shutdown", True)),
        ("gptload", 1013, "refused", ("refused", False)),
        ("gptload", 1008, "", ("refused", False)),  # no cause given: never counted a success
        ("", 0, "", ("unknown", False)),
    ],
)
def test_the_outcome_follows_what_ended_the_session(closer, code, cause, expected):
    assert session_outcome(closer, code, cause) == expected
