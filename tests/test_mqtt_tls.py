"""MQTT identities: the broker URL and its secrets, the PKI, and a real
Mosquitto on loopback with TLS and the fleet's ACL (the lab's test of the
same is in test_opscenter_lab.py)."""

from __future__ import annotations

import argparse
import asyncio
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from mosquitto import Broker, recording, running_mosquitto

from netwatch import pki
from netwatch.cli import main as netwatch_main
from netwatch.messages import OnlineMessage
from netwatch.mqtt import broker as mqtt_broker
from netwatch.mqtt.broker import PASSWORD_ENV, parse_broker, parse_broker_url
from netwatch.mqtt.errors import BadBrokerUrl
from netwatch.mqtt.mosquitto import ACL, tls_listener
from netwatch.mqtt.publisher import Publisher

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hunter2-very-secret"


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = pki.Pki(tmp_path_factory.mktemp("pki"))
    pki.init(store, ["127.0.0.1", "localhost"])
    for name in ("nishiki", "takaharu", pki.OPSCENTER_CN):
        pki.issue(store, name)
    return store.root


# -- the URL and its secrets -----------------------------------------------------


def test_default_ports_follow_the_scheme() -> None:
    assert parse_broker_url("mqtt://10.0.0.1") == ("10.0.0.1", 1883)
    assert parse_broker_url("mqtts://10.0.0.1") == ("10.0.0.1", 8883)
    assert str(parse_broker("mqtt://h:1999")) == "mqtt://h:1999"


def test_a_password_in_the_url_is_refused_and_never_repeated() -> None:
    with pytest.raises(BadBrokerUrl) as caught:
        parse_broker(f"mqtts://alice:{SECRET}@broker:8883")
    assert SECRET not in str(caught.value)
    assert "--mqtt-password-file" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "kwargs", "reason"),
    [
        ("mqtt://alice@h", {}, "need an mqtts:// URL"),
        ("mqtt://h", {"ca": "/etc/hostname"}, "need an mqtts:// URL"),
        ("mqtts://h", {"cert": "/etc/hostname"}, "both --cert and --key"),
        ("mqtts://h", {"password": "x"}, "needs a user name"),
        ("mqtts://h", {"ca": "/nonexistent/ca.crt"}, "--ca /nonexistent/ca.crt: No such file"),
        ("tcp://h", {}, "expected a broker URL"),
        ("mqtts://h:0", {}, "not a number"),
    ],
)
def test_bad_broker_settings_are_one_line(url: str, kwargs: dict[str, str], reason: str) -> None:
    with pytest.raises(BadBrokerUrl, match=reason) as caught:
        parse_broker(url, **kwargs)
    assert "\n" not in str(caught.value)


def test_tls_files_that_do_not_load_are_found_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate")
    with pytest.raises(BadBrokerUrl, match="do not load"):
        parse_broker("mqtts://h", ca=bad)


def _args(**values: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    mqtt_broker.add_arguments(parser)
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in values.items() if v is not None]
    return parser.parse_args(argv)


def test_the_password_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "password"
    secret.write_text(f"{SECRET}\n")
    broker = mqtt_broker.from_arguments(
        "mqtts://h", _args(mqtt_username="alice", mqtt_password_file=str(secret))
    )
    assert (broker.username, broker.password) == ("alice", SECRET)
    assert SECRET not in str(broker)
    assert SECRET not in repr(broker)
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert mqtt_broker.from_arguments("mqtts://bob@h", _args()).password == "from-env"
    with pytest.raises(BadBrokerUrl, match="--mqtt-password-file /nonexistent"):
        mqtt_broker.from_arguments("mqtts://h", _args(mqtt_password_file="/nonexistent"))


def test_a_brokers_arguments_read_back_as_the_same_broker(pki_dir: Path) -> None:
    store = pki.Pki(pki_dir)
    broker = parse_broker(
        "mqtts://127.0.0.1", ca=store.ca_cert, cert=store.cert("nishiki"), key=store.key("nishiki")
    )
    parser = argparse.ArgumentParser()
    mqtt_broker.add_arguments(parser)
    again = mqtt_broker.from_arguments("mqtts://127.0.0.1", parser.parse_args(broker.arguments()))
    assert again == broker
    assert parse_broker("mqtt://h").arguments() == []


def test_every_mqtt_command_says_where_the_password_comes_from(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ("agent", "opscenter", "drill"):
        with pytest.raises(SystemExit):
            netwatch_main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--mqtt-password-file" in text, command
        assert PASSWORD_ENV in text, command
        assert "never from the URL" in text, command


def test_every_command_that_takes_a_secret_says_where_it_comes_from(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The load tests' terminal password (loadprobe, drills, acceptance)."""
    for command in (["drill"], ["acceptance"]):
        with pytest.raises(SystemExit):
            netwatch_main([*command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "loadtest.credentials" in text, command
    done = subprocess.run(
        [sys.executable, "-m", "loadprobe.cli", "run", "--help"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert "loadtest.credentials, never from the command line" in " ".join(done.stdout.split())


def test_a_bad_broker_url_is_one_line_from_the_agent() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netwatch.cli", "agent", "--town", "nishiki",
         "--mqtt", f"mqtts://u:{SECRET}@h", "--route-backend", "dry-run"],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert SECRET not in done.stderr


# -- the PKI ---------------------------------------------------------------------


def test_pki_makes_a_ca_and_identities_whose_cn_is_the_town(pki_dir: Path) -> None:
    store = pki.Pki(pki_dir)
    cert = x509.load_pem_x509_certificate(store.cert("nishiki").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "nishiki"
    for name in ("ca", "broker", "nishiki", "opscenter"):
        assert stat.S_IMODE(store.key(name).stat().st_mode) == 0o600
    # the chain verifies: the broker's certificate against the CA, for its name
    context = ssl.create_default_context(cafile=str(store.ca_cert))
    context.load_cert_chain(str(store.cert("nishiki")), str(store.key("nishiki")))
    infos = {info.cn: info for info in pki.show(store)}
    assert infos["netwatch CA"].is_ca
    assert infos["127.0.0.1"].names == ("127.0.0.1", "localhost")  # the broker's


def test_pki_overwrites_nothing_without_force(pki_dir: Path) -> None:
    store = pki.Pki(pki_dir)
    before = store.key("nishiki").read_bytes()
    with pytest.raises(pki.PkiError, match="exists"):
        pki.issue(store, "nishiki")
    with pytest.raises(pki.PkiError, match="exists"):
        pki.init(store, ["127.0.0.1"])
    assert store.key("nishiki").read_bytes() == before
    with pytest.raises(pki.PkiError, match="own files"):
        pki.issue(store, "ca", force=True)


def test_pki_command_refuses_an_unknown_town_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the topology's default path

    def netwatch(*args: str) -> tuple[int, str, str]:
        code = netwatch_main(["pki", "--dir", str(tmp_path), *args])
        out, err = capsys.readouterr()
        return code, out, err

    assert netwatch("issue", "nishiki")[2].strip().endswith("run `netwatch pki init` first")
    assert netwatch("init")[0] == 0
    code, _, err = netwatch("issue", "nowhere")
    assert code == 2
    assert "unknown town 'nowhere'" in err
    assert err.count("\n") == 1
    assert netwatch("issue", "tsuno")[0] == 0
    shown = netwatch("show")[1]
    assert "CN=tsuno" in shown
    assert "names 10.210.0.10" in shown


def test_the_shipped_broker_files_are_the_fleets() -> None:
    acl = (ROOT / "deploy/mosquitto/netwatch.acl").read_text(encoding="utf-8")
    assert acl == ACL
    conf = (ROOT / "deploy/mosquitto/netwatch.conf").read_text(encoding="utf-8")
    wanted = tls_listener(
        "10.210.0.10",
        8883,
        ca="/etc/mosquitto/netwatch/ca.crt",
        cert="/etc/mosquitto/netwatch/broker.crt",
        key="/etc/mosquitto/netwatch/broker.key",
        acl="/etc/mosquitto/netwatch.acl",
    )
    assert wanted in conf


# -- a real broker with TLS and the ACL --------------------------------------------


@pytest.fixture
def tls_broker(tmp_path: Path, pki_dir: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "mosquitto", pki=pki_dir)
    with running_mosquitto(tmp_path / "mosquitto", broker=broker):
        yield broker


async def _publish(broker: Broker, identity: str, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client(
        **broker.client(identity).client_options(), identifier=f"t-{identity}", timeout=5
    ) as client:
        await client.publish(topic, payload, qos=1)


def test_a_town_publishes_only_as_itself(tls_broker: Broker) -> None:
    """Takaharu's certificate cannot write Nishiki's topics: the broker drops
    the message (and says so in its log); its own topic goes through."""

    async def scenario() -> None:
        async with recording(tls_broker, "netwatch/v1/#") as rec:
            forged = OnlineMessage(town="nishiki", online=False).to_json()
            await _publish(tls_broker, "takaharu", "netwatch/v1/nishiki/online", forged)
            await _publish(tls_broker, pki.OPSCENTER_CN, "netwatch/v1/nishiki/online", forged)
            own = OnlineMessage(town="takaharu", online=True).to_json()
            await _publish(tls_broker, "takaharu", "netwatch/v1/takaharu/online", own)
            await rec.wait_for(
                lambda ms: any(m.topic == "netwatch/v1/takaharu/online" for m in ms),
                what="Takaharu's own message",
            )
            assert rec.on("netwatch/v1/nishiki/online") == []

    asyncio.run(scenario())
    assert "Denied PUBLISH from" in tls_broker.log_tail(200)


def test_the_agents_publisher_speaks_tls_with_its_certificate(
    tls_broker: Broker, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with recording(tls_broker, "netwatch/v1/#") as rec:
            broker = tls_broker.client("nishiki")
            async with Publisher(town="nishiki", url=broker, spool_dir=tmp_path / "spool") as pub:
                assert pub.url == str(broker)
                await rec.wait_for(
                    lambda ms: any(m.topic == "netwatch/v1/nishiki/online" for m in ms),
                    what="nishiki online over TLS",
                )

    asyncio.run(scenario())


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
def test_a_client_without_the_fleets_certificate_cannot_connect(
    tls_broker: Broker, tmp_path: Path, who: str
) -> None:
    ca = tls_broker.client().ca
    assert ca is not None
    if who == "no certificate":
        broker = parse_broker(tls_broker.url, ca=ca)
    else:
        other = pki.Pki(tmp_path / "other")
        pki.init(other, ["127.0.0.1"])
        pki.issue(other, "nishiki")
        broker = parse_broker(
            tls_broker.url, ca=ca, cert=other.cert("nishiki"), key=other.key("nishiki")
        )

    async def connect() -> None:
        async with aiomqtt.Client(**broker.client_options(), identifier="intruder", timeout=3):
            pass

    with pytest.raises(aiomqtt.MqttError):
        asyncio.run(connect())
