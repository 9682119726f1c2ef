"""The agent's least privilege (netwatch.lab.privilege): who may reach what,
the mount plan, and, as root, a real confined process: the agent user's
uid, exactly NET_RAW|NET_ADMIN, files behind 0700 directories reachable at
their own paths, and the host's mount table untouched.

The root tests use the host's network namespace or a scratch one named
``nwpriv-test-<pid>`` (never the lab's ``nw-*``) and take about a second each."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import netwatch
from netwatch.errors import LabError
from netwatch.lab.privilege import (
    AGENT_CAPS,
    AGENT_USER,
    MODULE,
    Step,
    StepKind,
    blocked_ancestors,
    cap_mask,
    confined_argv,
    ensure_user,
    grant,
    plan_view,
    reachable,
    runtime_paths,
    traversable,
)

CHECKOUT = Path(netwatch.__file__).resolve().parents[1]
OUTSIDER = 54321  # a uid and gid no file here belongs to
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setpriv, mounts)")


def _only(blocked: set[str]) -> Callable[[Path], bool]:
    return lambda d: d.as_posix() not in blocked


def _under(paths: list[Path], top: Path) -> list[Path]:
    return [p for p in paths if top in p.parents]


# --- pure: permission classes and blocked ancestors ----------------------------------


def test_a_directory_without_search_for_others_blocks_everything_below(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (tmp_path / "a").chmod(0o700)
    assert _under(blocked_ancestors(deep, OUTSIDER, OUTSIDER), tmp_path) == [tmp_path / "a"]
    assert not traversable(tmp_path / "a", OUTSIDER, OUTSIDER)
    assert traversable(tmp_path / "a" / "b", OUTSIDER, OUTSIDER)
    (tmp_path / "a").chmod(0o711)  # search without listing is enough
    assert _under(blocked_ancestors(deep, OUTSIDER, OUTSIDER), tmp_path) == []


def test_the_owner_class_wins_then_the_group_class(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    st = folder.stat()
    folder.chmod(0o070)  # the group and nobody else, not even the owner
    assert not traversable(folder, st.st_uid, OUTSIDER) or st.st_uid == 0
    assert traversable(folder, OUTSIDER, st.st_gid)
    assert traversable(folder, OUTSIDER, OUTSIDER, groups=(st.st_gid,))
    assert not traversable(folder, OUTSIDER, OUTSIDER)
    folder.chmod(0o701)  # others may, the group may not: a member is refused
    assert not traversable(folder, OUTSIDER, st.st_gid)
    assert traversable(folder, OUTSIDER, OUTSIDER)


def test_root_reaches_everything_and_a_missing_directory_blocks(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir(mode=0o000)
    assert reachable(tmp_path / "x" / "y", 0, 0)
    assert not traversable(tmp_path / "missing", OUTSIDER, OUTSIDER)


# --- pure: the mount plan ------------------------------------------------------------


def test_only_the_topmost_blocked_ancestor_is_covered() -> None:
    steps = plan_view([Path("/root/src/ck")], _only({"/root", "/root/src"}))
    assert steps == [Step(StepKind.COVER, Path("/root")), Step(StepKind.BIND, Path("/root/src/ck"))]


def test_a_reachable_path_needs_no_mount() -> None:
    assert plan_view([Path("/usr/lib/python3"), Path("/work/main")], _only({"/root"})) == []


def test_paths_under_one_blocked_directory_share_its_cover_and_parents_come_first() -> None:
    steps = plan_view(
        [
            Path("/tmp/pytest-of-root/p-1/run/agents/nishiki"),
            Path("/root/.pyenv/versions/3.11.7"),
            Path("/root/ck/"),
            Path("/tmp/pytest-of-root/p-1/topology.yaml"),
            Path("/root/ck"),
        ],
        _only({"/root", "/tmp/pytest-of-root", "/tmp/pytest-of-root/p-1"}),
    )
    assert [(s.kind.value, s.path.as_posix()) for s in steps] == [
        ("cover", "/root"),
        ("bind", "/root/ck"),
        ("cover", "/tmp/pytest-of-root"),
        ("bind", "/root/.pyenv/versions/3.11.7"),
        ("bind", "/tmp/pytest-of-root/p-1/topology.yaml"),
        ("bind", "/tmp/pytest-of-root/p-1/run/agents/nishiki"),
    ]


def test_a_path_inside_an_exposed_one_counts_only_what_blocks_below_that_one() -> None:
    blocked = {"/root", "/root/ck/private"}
    assert plan_view([Path("/root/ck"), Path("/root/ck/netwatch")], _only(blocked)) == [
        Step(StepKind.COVER, Path("/root")),
        Step(StepKind.BIND, Path("/root/ck")),
    ]
    steps = plan_view([Path("/root/ck"), Path("/root/ck/private/spool")], _only(blocked))
    assert [s.path.as_posix() for s in steps] == [
        "/root",
        "/root/ck",
        "/root/ck/private",
        "/root/ck/private/spool",
    ]
    assert [s.kind for s in steps] == [StepKind.COVER, StepKind.BIND] * 2


def test_a_path_inside_an_exposed_directory_the_user_cannot_search_is_refused() -> None:
    with pytest.raises(LabError, match=r"/root/ck/x: /root/ck is exposed"):
        plan_view([Path("/root/ck"), Path("/root/ck/x")], _only({"/root", "/root/ck"}))


def test_a_relative_path_is_refused() -> None:
    with pytest.raises(LabError, match="not an absolute path"):
        plan_view([Path("run/agents")], _only(set()))


# --- pure: the wrapper's argv --------------------------------------------------------


def test_the_capability_mask_is_the_kernels() -> None:
    assert cap_mask(AGENT_CAPS) == 0x3000
    with pytest.raises(LabError, match="unknown capability 'cap_net_raw'"):
        cap_mask(["cap_net_raw"])


def test_the_wrapper_runs_the_trampoline_with_numeric_ids_then_the_argv(tmp_path: Path) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    argv = confined_argv(["/bin/true", "--x", "a b"], user="nobody", expose=[tmp_path, "rel"])
    assert argv[:4] == [sys.executable, "-I", "-m", MODULE]
    assert f"--uid={nobody.pw_uid}" in argv
    assert f"--gid={nobody.pw_gid}" in argv
    assert "--caps=net_raw,net_admin" in argv
    assert f"--expose={tmp_path}" in argv
    assert f"--expose={Path.cwd() / 'rel'}" in argv  # made absolute
    assert argv[argv.index("--") + 1 :] == ["/bin/true", "--x", "a b"]


def test_the_wrapper_refuses_root_an_unknown_user_or_capability() -> None:
    with pytest.raises(LabError, match="is root"):
        confined_argv(["/bin/true"], user="root", expose=[])
    with pytest.raises(LabError, match="no user 'nw-no-such-user'"):
        confined_argv(["/bin/true"], user="nw-no-such-user", expose=[])
    with pytest.raises(LabError, match="unknown capability"):
        confined_argv(["/bin/true"], user="nobody", caps=["everything"], expose=[])


def test_runtime_paths_hold_the_checkout_and_the_interpreter() -> None:
    paths = runtime_paths()
    assert any(p == CHECKOUT or p in CHECKOUT.parents for p in paths)
    base = Path(os.path.realpath(sys.executable))
    assert any(p in base.parents for p in paths)
    assert not any(a in paths for p in paths for a in p.parents)  # outermost only


def test_an_invalid_user_name_is_one_line() -> None:
    with pytest.raises(LabError, match="not a valid user name"):
        ensure_user("no such user")


# --- root: a real confined process ---------------------------------------------------

CHILD = r"""
import json, os, socket, sys

data, spool, netlink = sys.argv[1], sys.argv[2], sys.argv[3] == "netlink"
out = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups()}
with open("/proc/self/status") as f:
    out["status"] = {
        k: v.strip() for k, _, v in (line.partition(":") for line in f)
        if k.startswith("Cap") or k == "NoNewPrivs"
    }
import netwatch.agent.cli  # the agent's whole import closure is reachable
from netwatch.constants import SO_MARK

with open(data) as f:
    out["data"] = f.read()
with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP):
    out["raw_icmp"] = True
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.setsockopt(socket.SOL_SOCKET, SO_MARK, 7)
    out["mark"] = s.getsockopt(socket.SOL_SOCKET, SO_MARK)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
    out["bound"] = True
for what, attempt in [
    ("shadow", lambda: open("/etc/shadow").close()),
    ("chown", lambda: os.chown(spool, 0, 0)),
    ("kill_init", lambda: os.kill(1, 0)),
    ("write_data_dir", lambda: open(os.path.join(os.path.dirname(data), "new"), "w").close()),
]:
    try:
        attempt()
        out[what] = "allowed"
    except PermissionError:
        out[what] = "denied"
with open(os.path.join(spool, "written"), "w") as f:
    f.write("ok")
out["spool"] = True
if netlink:  # in the scratch namespace: a link and a route, as the agent changes them
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        ipr.route("add", dst="192.0.2.0/24", oif=lo, proto=91)
        out["route"] = [r.get_attr("RTA_DST") for r in ipr.get_routes(proto=91)]
print(json.dumps(out))
"""


@pytest.fixture
def agent_ids() -> tuple[int, int]:
    return ensure_user(AGENT_USER)


VIEW = r"""
import json, sys

mounts = []
with open("/proc/self/mountinfo") as f:
    for line in f:
        fields = line.split()
        mounts.append([fields[4], fields[fields.index("-") + 1]])
print(json.dumps(mounts), flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def hidden(tmp_path: Path, agent_ids: tuple[int, int]) -> Path:
    """tmp_path/secret (0700)/work holding child.py, view.py, data.txt and a
    spool/ granted to the agent user; as root, tmp_path itself lies below
    /tmp/pytest-of-root (0700) too."""
    secret = tmp_path / "secret"
    work = secret / "work"
    (work / "spool").mkdir(parents=True)
    (work / "child.py").write_text(CHILD)
    (work / "view.py").write_text(VIEW)
    (work / "data.txt").write_text("ledger")
    secret.chmod(0o700)
    grant(work / "spool", *agent_ids)
    assert not reachable(work, *agent_ids)
    return work


def _confined(work: Path, script: str, *args: str) -> list[str]:
    files = [work / script, work / "data.txt", work / "spool"]
    return confined_argv(
        [sys.executable, *map(str, files), *args], expose=[*runtime_paths(), CHECKOUT, *files]
    )


def _host_mounts() -> set[str]:
    """This (the host's) mount table, but for network namespaces pinned
    meanwhile by others (a lab run may be creating its own)."""
    with open("/proc/self/mountinfo") as f:
        return {line for line in f if not f"{line.split()[4]}/".startswith("/run/netns/")}


@needs_root
def test_ensure_user_gives_a_system_user_with_no_shell(agent_ids: tuple[int, int]) -> None:
    entry = pwd.getpwnam(AGENT_USER)
    assert (entry.pw_uid, entry.pw_gid) == agent_ids
    assert 0 < entry.pw_uid < 1000
    assert entry.pw_shell.endswith(("nologin", "false"))
    assert not os.path.exists(entry.pw_dir)
    assert ensure_user(AGENT_USER) == agent_ids  # idempotent


@needs_root
@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 missing")
def test_the_agent_runs_as_its_user_with_exactly_net_raw_and_net_admin(
    hidden: Path, agent_ids: tuple[int, int]
) -> None:
    ns = f"nwpriv-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:  # as the lab starts a service: ip netns exec NS <wrapper>
        result = subprocess.run(
            ["ip", "netns", "exec", ns, *_confined(hidden, "child.py", "netlink")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    uid, gid = agent_ids
    assert (out["uid"], out["euid"], out["gid"], out["groups"]) == (uid, uid, gid, [])
    assert out["status"] == {
        "CapInh": "0000000000003000",
        "CapPrm": "0000000000003000",
        "CapEff": "0000000000003000",
        "CapBnd": "0000000000003000",
        "CapAmb": "0000000000003000",
        "NoNewPrivs": "1",
    }
    assert out["data"] == "ledger"
    assert (out["raw_icmp"], out["mark"], out["bound"], out["spool"]) == (True, 7, True, True)
    assert out["route"] == ["192.0.2.0"]
    refused = ("shadow", "chown", "kill_init", "write_data_dir")
    assert {k: out[k] for k in refused} == dict.fromkeys(refused, "denied")
    written = hidden / "spool" / "written"
    assert written.read_text() == "ok"  # written at its own path: the host sees it there
    assert written.stat().st_uid == uid


@needs_root
def test_the_view_is_the_agents_alone_the_host_mount_table_is_unchanged(
    hidden: Path, agent_ids: tuple[int, int]
) -> None:
    cover = blocked_ancestors(hidden, *agent_ids)[0]
    before = _host_mounts()
    argv = _confined(hidden, "view.py")
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            assert child.stdin is not None
            view = {tuple(m) for m in json.loads(child.stdout.readline())}  # then it waits
            during = _host_mounts()
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.wait(timeout=10) == 0
        finally:
            if child.poll() is None:
                child.kill()
    assert (str(cover), "tmpfs") in view
    assert {str(hidden / name) for name in ("view.py", "data.txt", "spool")} <= {p for p, _ in view}
    assert before == during == _host_mounts()
    assert not [line for line in during if str(cover) in line.split()[4]]


@needs_root
def test_a_missing_exposed_path_is_one_line_and_exit_2(
    tmp_path: Path, agent_ids: tuple[int, int]
) -> None:
    argv = confined_argv(["/bin/true"], expose=[tmp_path / "missing"])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    missing = tmp_path / "missing"
    assert result.stderr.strip().splitlines() == [
        f"netwatch lab: agent sandbox: cannot expose {missing}: no such file or directory"
    ]


@needs_root
def test_an_exposed_file_the_user_may_not_read_is_named(
    hidden: Path, agent_ids: tuple[int, int]
) -> None:
    (hidden / "data.txt").chmod(0o600)
    argv = confined_argv(["/bin/true"], expose=[*runtime_paths(), hidden / "data.txt"])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert f"{hidden / 'data.txt'}: uid {agent_ids[0]} may not use it (-rw-------)" in result.stderr
