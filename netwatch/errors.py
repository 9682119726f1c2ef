"""The one exception every netwatch command turns into a one-line message.

UserError            bad input or a state the operator can fix; exit 1
  LabError           the lab cannot be built, inspected or changed
"""

from __future__ import annotations


class UserError(Exception):
    """Printed as ``netwatch <command>: <message>``, never as a traceback."""

    exit_code = 1
