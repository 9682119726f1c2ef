"""The shipped systemd units (deploy/systemd/) keep their least privilege:
who each service runs as, which capabilities it may hold, what it may write,
where its secrets come from; and, where this machine's systemd-analyze can
say it, that each unit parses cleanly and that its exposure score stays in
the tool's OK band or better (RELIABILITY.md records the scores).

The units are read with a small parser of systemd's own syntax (repeated
keys are kept in order, a trailing backslash continues a line), so these
tests need no systemd, no root and no installed project."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"
AGENT = "netwatch-agent@.service"
OPSCENTER = "netwatch-opscenter.service"
DRILL = "netwatch-drill.service"
TIMER = "netwatch-drill.timer"
SERVICES = (AGENT, OPSCENTER, DRILL)
EXECUTABLE = "/opt/netwatch/.venv/bin/netwatch"

# systemd-analyze security's bands (src/analyze/analyze-security.c): an
# exposure of 5.0 or more is MEDIUM or worse; OK is 1.0-4.9.
GOOD_LEVELS = {"OK", "SAFE", "PERFECT"}
OK_LIMIT = 4.9

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(text: str) -> Unit:
    """Sections to (key, value) pairs in file order, as systemd reads them:
    comments (# or ;) skipped, backslash-continued lines joined."""
    sections: Unit = {}
    section: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if pending and line and line[0] in "#;":
            continue  # a comment inside a continued line is dropped
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], [])
            continue
        if section is None or "=" not in line:
            raise ValueError(f"not a unit file line: {line!r}")
        key, value = line.split("=", 1)
        section.append((key.strip(), value.strip()))
    return sections


def load(name: str) -> Unit:
    return parse_unit((UNITS / name).read_text(encoding="utf-8"))


def values(unit: Unit, key: str, section: str = "Service") -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def last(unit: Unit, key: str, section: str = "Service") -> str | None:
    found = values(unit, key, section)
    return found[-1] if found else None


def words(unit: Unit, key: str, section: str = "Service") -> set[str]:
    """A list-valued setting: an empty assignment resets what came before."""
    result: set[str] = set()
    for value in values(unit, key, section):
        result = set() if not value else result | set(value.split())
    return result


def truthy(value: str | None) -> bool:
    return value is not None and value.lower() in {"yes", "true", "1", "on"}


def exec_argv(unit: Unit) -> list[str]:
    (line,) = values(unit, "ExecStart")
    return line.split()


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def credentials(unit: Unit) -> dict[str, str]:
    """LoadCredential=ID:PATH, by ID."""
    found: dict[str, str] = {}
    for value in values(unit, "LoadCredential"):
        ident, _, path = value.partition(":")
        found[ident] = path
    return found


def state_dirs(unit: Unit) -> list[str]:
    return [f"/var/lib/{d}" for v in values(unit, "StateDirectory") for d in v.split()]


def runtime_dirs(unit: Unit) -> list[str]:
    return [f"/run/{d}" for v in values(unit, "RuntimeDirectory") for d in v.split()]


def inside(path: str, directory: str) -> bool:
    return PurePosixPath(directory) in PurePosixPath(path).parents or path == directory


# --- the parser itself -------------------------------------------------------------


def test_the_parser_reads_systemds_syntax() -> None:
    unit = parse_unit(
        "# a comment\n[Service]\nExecStart=/bin/a \\\n    # dropped\n    --b c\n"
        "SystemCallFilter=@system-service\nSystemCallFilter=~@privileged\n"
        "CapabilityBoundingSet=CAP_A\nCapabilityBoundingSet=\n; another\n"
    )
    assert values(unit, "ExecStart") == ["/bin/a --b c"]
    assert values(unit, "SystemCallFilter") == ["@system-service", "~@privileged"]
    assert words(unit, "CapabilityBoundingSet") == set()
    with pytest.raises(ValueError, match="not a unit file line"):
        parse_unit("[Service]\nno equals sign\n")


# --- every service -----------------------------------------------------------------------

HARDENING_YES = (
    "NoNewPrivileges",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "RestrictNamespaces",
)


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_is_sandboxed(name: str) -> None:
    unit = load(name)
    for key in HARDENING_YES:
        assert truthy(last(unit, key)), f"{name}: {key}=yes"
    assert last(unit, "ProtectSystem") == "strict", name
    assert last(unit, "ProtectHome") in {"yes", "true", "read-only"}, name
    assert last(unit, "SystemCallArchitectures") == "native", name
    filters = values(unit, "SystemCallFilter")
    assert filters[0] == "@system-service", f"{name}: an allow list first"
    denied = {w for f in filters[1:] if f.startswith("~") for w in f[1:].split()}
    assert {"@privileged", "@resources"} <= denied, name
    assert last(unit, "SystemCallErrorNumber") == "EPERM", f"{name}: fail a call, not the service"
    families = words(unit, "RestrictAddressFamilies")
    assert families <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}, name
    assert "AF_PACKET" not in families
    assert last(unit, "UMask") is not None, name
    assert values(unit, "ExecStart")[0].split()[0] == EXECUTABLE


@pytest.mark.parametrize("name", SERVICES)
def test_no_service_keeps_root_power(name: str) -> None:
    """The drill stays uid 0 (an operator's fault command may use root's ssh
    keys), but none keeps CAP_SYS_ADMIN, CAP_DAC_OVERRIDE or any capability
    beyond the two network ones."""
    unit = load(name)
    bounding = words(unit, "CapabilityBoundingSet")
    assert values(unit, "CapabilityBoundingSet"), f"{name}: a bounding set is given"
    assert bounding <= {"CAP_NET_RAW", "CAP_NET_ADMIN"}, name
    assert words(unit, "AmbientCapabilities") <= bounding, name


# --- the agent ----------------------------------------------------------------------------


def test_agent_runs_as_netwatch_with_exactly_two_capabilities() -> None:
    unit = load(AGENT)
    assert last(unit, "User") == "netwatch"
    assert last(unit, "Group") == "netwatch"
    assert not truthy(last(unit, "DynamicUser")), "the socket's group must be a fixed one"
    assert words(unit, "CapabilityBoundingSet") == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert words(unit, "AmbientCapabilities") == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert words(unit, "RestrictAddressFamilies") == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    }
    assert last(unit, "UMask") == "0077"
    assert last(unit, "ProcSubset") == "pid"
    assert last(unit, "ProtectProc") == "invisible"


def test_agent_works_in_the_hosts_network_namespace() -> None:
    """Routes and rules are the host's: no private network or user namespace
    (a capability inside a user namespace of its own would not count)."""
    unit = load(AGENT)
    assert not truthy(last(unit, "PrivateNetwork"))
    assert not truthy(last(unit, "PrivateUsers"))
    assert not values(unit, "NetworkNamespacePath")


def test_agent_writes_only_its_spool_and_its_socket_directory() -> None:
    unit = load(AGENT)
    argv = exec_argv(unit)
    spool = option(argv, "--spool")
    socket = option(argv, "--control-socket")
    assert spool == "/var/lib/netwatch/spool/%i"
    assert state_dirs(unit) == [spool], "the spool is the state directory, nothing more"
    assert socket == "/run/netwatch/agent-%i.sock"
    assert runtime_dirs(unit) == ["/run/netwatch"]
    assert inside(socket, "/run/netwatch")
    # Instances (and the drills' locks) share /run/netwatch: one stopping
    # must not remove it under the others.
    assert truthy(last(unit, "RuntimeDirectoryPreserve"))
    mode = int(last(unit, "RuntimeDirectoryMode") or "0755", 8)
    assert mode & 0o1000, "sticky: only the agent removes the agent's socket"
    assert mode & 0o070 == 0o070, "the netwatch group reaches the socket and keeps its locks"
    assert mode & 0o007 == 0, "nobody else"
    assert not values(unit, "ReadWritePaths")


def test_agent_needs_no_privilege_for_its_scheduling_and_locked_memory() -> None:
    """systemd sets SCHED_RR and the memlock limit before exec; the agent is
    not asked to (it has neither CAP_SYS_NICE nor CAP_IPC_LOCK), and the
    system-call filter refuses chown, so no --control-group."""
    argv = exec_argv(load(AGENT))
    unit = load(AGENT)
    assert "--realtime-priority" not in argv
    assert "--control-group" not in argv
    assert "--lock-memory" in argv
    assert last(unit, "LimitMEMLOCK") == "infinity"
    assert last(unit, "CPUSchedulingPolicy") == "rr"


@pytest.mark.parametrize(
    ("name", "identity"),
    [(AGENT, "%i"), (OPSCENTER, "opscenter"), (DRILL, "drill")],
)
def test_mqtt_identity_comes_as_credentials(name: str, identity: str) -> None:
    """--ca/--cert/--key point into the credentials directory (%d), which
    systemd fills from /etc/netwatch/pki: the key stays root-only there and
    is readable by this service alone.  The broker is the topology's
    (mqtts://), not a URL of the unit's own."""
    unit = load(name)
    argv = exec_argv(unit)
    loaded = credentials(unit)
    assert "--mqtt" not in argv, f"{name}: the topology's broker"
    for flag, file in (
        ("--ca", "ca.crt"),
        ("--cert", f"{identity}.crt"),
        ("--key", f"{identity}.key"),
    ):
        given = option(argv, flag)
        assert given is not None, f"{name} {flag}"
        assert given.startswith("%d/"), f"{name} {flag}: the credentials directory"
        assert loaded[given.removeprefix("%d/")] == f"/etc/netwatch/pki/{file}", f"{name} {flag}"
    assert "--mqtt-password-file" not in argv, "the certificate is the identity"


def test_the_shipped_topology_talks_tls_to_the_broker() -> None:
    topology = yaml.safe_load((ROOT / "topology.yaml").read_text(encoding="utf-8"))
    assert topology["opscenter"]["mqtt"].startswith("mqtts://")


# --- the operations center ------------------------------------------------------------------


def test_opscenter_has_no_capabilities_and_no_fixed_user() -> None:
    unit = load(OPSCENTER)
    assert values(unit, "CapabilityBoundingSet") == [""], "an empty bounding set"
    assert words(unit, "AmbientCapabilities") == set()
    assert truthy(last(unit, "DynamicUser"))
    assert last(unit, "User") not in {None, "root", "0"}
    assert truthy(last(unit, "PrivateUsers"))
    assert truthy(last(unit, "PrivateNetwork")) is False, "it talks to the broker"
    assert words(unit, "RestrictAddressFamilies") == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_opscenter_database_lives_in_its_own_state_directory() -> None:
    unit = load(OPSCENTER)
    db = option(exec_argv(unit), "--db")
    assert db is not None
    (directory,) = state_dirs(unit)
    assert str(PurePosixPath(db).parent) == directory, "SQLite's WAL files go beside it"
    assert last(unit, "RestartPreventExitStatus") == "2", "a corrupt database is not retried"


# --- the drill ----------------------------------------------------------------------------


def test_drill_keeps_root_but_only_what_a_drill_needs() -> None:
    unit = load(DRILL)
    assert words(unit, "CapabilityBoundingSet") == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert words(unit, "AmbientCapabilities") == set()
    assert "netwatch" in words(unit, "SupplementaryGroups"), "the agents' control sockets"
    assert last(unit, "ProtectHome") == "read-only", "ssh reads root's keys"
    assert last(unit, "Type") == "oneshot"
    writable = words(unit, "ReadWritePaths")
    assert "-/run/netwatch" in writable, "the drill's lock, beside the agents' sockets"
    assert "/var/lib/netwatch" in writable, "drills.json"
    assert last(unit, "WorkingDirectory") == "/var/lib/netwatch"


def test_timer_starts_the_drill_service() -> None:
    timer = load(TIMER)
    assert last(timer, "Unit", "Timer") == DRILL
    assert truthy(last(timer, "Persistent", "Timer"))


# --- between the units --------------------------------------------------------------------


def test_no_unit_claims_a_directory_another_unit_uses() -> None:
    """systemd chowns a unit's StateDirectory=/RuntimeDirectory= (recursively,
    when its owner differs) to the unit's user: a unit claiming
    /var/lib/netwatch itself would take the agents' spools below it."""
    claims = [(name, d) for name in SERVICES for d in state_dirs(load(name))]
    for name, directory in claims:
        for other, theirs in claims:
            if other != name:
                assert not inside(theirs, directory), f"{name} claims {directory} over {other}"
    users = {last(load(name), "User") for name in SERVICES if runtime_dirs(load(name))}
    assert users == {"netwatch"}, "only the agent instances own /run/netwatch"


def test_secrets_come_only_through_credentials_or_etc_netwatch() -> None:
    secret = re.compile(r"\S*(?:\.key|password\S*)\b")
    for name in SERVICES:
        unit = load(name)
        for key, value in unit.get("Service", []):
            for found in secret.findall(value):
                if key == "LoadCredential":
                    assert found.split(":", 1)[1].startswith("/etc/netwatch/"), (name, found)
                else:
                    assert found.startswith(("%d/", "/etc/netwatch/")), (name, key, found)
        assert not any(
            v.startswith(("LOADPROBE_PASSWORD", "NETWATCH_MQTT_PASSWORD="))
            for v in values(unit, "Environment")
        ), name


def test_the_netwatch_user_is_declared_for_systemd_sysusers() -> None:
    lines = [
        line.split()
        for line in (UNITS / "netwatch-sysusers.conf").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0][:2] == ["u", "netwatch"]
    assert lines[0][-1] == "/usr/sbin/nologin"


# --- systemd-analyze ------------------------------------------------------------------------


def _analyze_help() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    done = subprocess.run([tool, "--help"], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout


OVERALL = re.compile(r"Overall exposure level for (\S+): (\d+\.\d) ([A-Z]+)")


@pytest.mark.parametrize("name", SERVICES)
def test_systemd_analyze_security_rates_the_unit_ok_or_better(name: str) -> None:
    if "--offline" not in _analyze_help():
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNITS / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = OVERALL.search(done.stdout)
    assert found is not None, done.stdout + done.stderr
    exposure, level = float(found.group(2)), found.group(3)
    assert level in GOOD_LEVELS, f"{name}: {exposure} {level}\n{done.stdout}"
    assert exposure <= OK_LIMIT, f"{name}: {exposure} {level}"


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    """`verify` checks that ExecStart='s program exists, so it runs against a
    scratch root holding the units, the distribution's own units they depend
    on and a stand-in for /opt/netwatch/.venv/bin/netwatch."""
    if "--root" not in _analyze_help():
        pytest.skip("this systemd-analyze has no --root")
    system = next(
        (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
        None,
    )
    if system is None or not (system / "sysinit.target").exists():
        pytest.skip("no systemd unit directory with sysinit.target here")
    root = tmp_path / "root"
    shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    local = root / "etc/systemd/system"
    local.mkdir(parents=True)
    for name in (*SERVICES, TIMER):
        shutil.copy(UNITS / name, local / name)
    program = root / EXECUTABLE.lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n", encoding="utf-8")
    program.chmod(0o755)
    done = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            f"--root={root}",
            "--man=no",
            AGENT.replace("@.", "@nishiki."),
            OPSCENTER,
            DRILL,
            TIMER,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = [line for line in (done.stdout + done.stderr).splitlines() if "netwatch" in line]
    assert said == [], "\n".join(said)
    assert done.returncode == 0, done.stdout + done.stderr
