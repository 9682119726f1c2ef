"""MQTT at the edge of a town's agent: a durable event spool and a publisher
that never makes its caller wait (the contract itself is `netwatch.messages`)."""

from netwatch.mqtt.broker import Broker, parse_broker, parse_broker_url
from netwatch.mqtt.errors import BadBrokerUrl, MqttSetupError, SpoolError, SpoolLockedError
from netwatch.mqtt.publisher import Publisher
from netwatch.mqtt.spool import Spool, SpooledMessage

__all__ = [
    "BadBrokerUrl",
    "Broker",
    "MqttSetupError",
    "Publisher",
    "Spool",
    "SpoolError",
    "SpoolLockedError",
    "SpooledMessage",
    "parse_broker",
    "parse_broker_url",
]
