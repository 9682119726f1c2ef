"""The fleet's broker side: what Mosquitto must enforce so that nobody
speaks for a town but that town.

- TLS only (1.2 or newer), and every client shows a certificate from the
  project's CA (`netwatch pki`): ``require_certificate``;
- the certificate's CN is the client's user name
  (``use_identity_as_username``), so an identity cannot be claimed, only
  proven; no anonymous clients;
- the ACL: a town reads and writes only ``netwatch/v1/<its id>/``; the
  operations center (CN ``opscenter``) reads every town's topics.

The lab writes its broker's configuration with these functions; the
production files in deploy/mosquitto/ hold the same text (a test keeps
them equal).  Mosquitto 2.0 drops to its own user before it reads the ACL
and the certificates: they must be readable by that user.
"""

from __future__ import annotations

from netwatch.messages import ROOT
from netwatch.pki import OPSCENTER_CN

ACL = f"""\
# netwatch: who may read and write what (Mosquitto acl_file).
# A client's user name is its certificate's CN (use_identity_as_username).
# A town reads and writes only its own topics: {ROOT}/<its id>/...
pattern readwrite {ROOT}/%u/#
# The operations center reads every town's topics.
user {OPSCENTER_CN}
topic read {ROOT}/#
"""


def tls_listener(address: str, port: int, *, ca: str, cert: str, key: str, acl: str) -> str:
    """The configuration lines of the fleet's TLS listener and its ACL."""
    return "\n".join(
        [
            "per_listener_settings false",
            "allow_anonymous false",
            f"acl_file {acl}",
            f"listener {port} {address}",
            f"cafile {ca}",
            f"certfile {cert}",
            f"keyfile {key}",
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.2",  # the oldest version accepted
            "",
        ]
    )
