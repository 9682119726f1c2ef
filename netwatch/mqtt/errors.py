"""The errors of `netwatch.mqtt`, one hierarchy::

    UserError (netwatch.errors)   printed by the CLI as one line, exit 2
      MqttSetupError              the publisher cannot start as configured
        BadBrokerUrl              the broker URL, its TLS files or its
                                  credentials cannot be used (broker.py)
        SpoolError                the spool directory cannot be used
          SpoolLockedError        another publisher holds the spool

Only set-up raises.  Trouble with the broker at run time is never raised to
the caller: it shows in `Publisher.connected` and `Publisher.last_error`,
and the publisher retries forever.
"""

from __future__ import annotations

from netwatch.errors import UserError


class MqttSetupError(UserError):
    """The publisher cannot start as configured."""


class BadBrokerUrl(MqttSetupError, ValueError):
    """The broker URL is not ``mqtt[s]://HOST[:PORT]``, or the TLS files and
    credentials given with it cannot be used."""


class SpoolError(MqttSetupError):
    """The spool directory cannot be created, read or locked."""


class SpoolLockedError(SpoolError):
    """Another publisher (in this process or another) holds the spool."""
