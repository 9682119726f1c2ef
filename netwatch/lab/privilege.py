"""Least privilege for the lab's agents: a dedicated user with two capabilities.

Why.  An agent needs only CAP_NET_RAW (raw ICMP sockets, SO_BINDTODEVICE)
and CAP_NET_ADMIN (SO_MARK, routes and links over netlink), so the lab,
which runs as root, starts each agent as the system user `AGENT_USER`
with exactly those two.  The catch is the files: the checkout the lab runs
from (the package is an editable install, the venv is inside it), the
Python it was built with (pyenv puts it under ``/root``), the topology file
and the lab's run directory may all lie below directories other users
cannot traverse (``/root`` is 0700, so is ``/tmp/pytest-of-root``), and
the lab may not change the host's permissions to fix that.

How.  `confined_argv` wraps the agent's argv in a trampoline,
``python -I -m netwatch.lab.privilege``, which runs as root (inside
``ip netns exec``, like any lab service) and then:

1. unshares a mount namespace of its own, made recursively private, so
   nothing it mounts reaches the host or any other process: only the
   agent's view of the file system changes;
2. for every exposed path with a *blocked* ancestor (a directory the user
   may not search), opens the path (O_PATH), mounts a small tmpfs (mode
   0755) over the topmost blocked ancestor, recreates the directories down
   to the path on it and bind-mounts the opened path back at its own
   absolute path (the source is ``/proc/self/fd/N``, so no staging
   directory is needed).  Bound trees keep their owners and modes: a path
   becomes reachable, never more readable or writable than it is;
3. checks that every exposed path is now reachable by the user (a clear
   one-line error otherwise, e.g. a checkout cloned with umask 077);
4. execs ``setpriv --reuid --regid --clear-groups --bounding-set
   --inh-caps --ambient-caps --no-new-privs -- ARGV``.  Same pid
   throughout: the lab's process record, marker and signals still apply.

Nothing the trampoline needs is read after the drop: setpriv and the
agent's interpreter are looked up by root, in the new view.

What the agent ends up with: uid and gid of `AGENT_USER`, no supplementary
groups, CapEff = CapPrm = CapInh = CapAmb = CapBnd = NET_RAW|NET_ADMIN
(0x3000), NoNewPrivs 1; write access only where the files say so (the lab
`grant`s it its spool and control-socket directory).  setpriv (util-linux
2.38) sets KEEPCAPS, changes the uid (the kernel then clears the ambient
and effective sets), re-applies the permitted set, then the bounding set,
the inheritable set and last the ambient set; the exec that follows gives
a non-root process with no file capabilities P' = E' = its ambient set.
The tests read these from /proc/PID/status.

Limits: permissions are judged from mode bits (owner, then group, then
other, as the kernel does); POSIX ACLs are not consulted, so a directory
an ACL opens is still covered (harmless).  The environment is passed on
unchanged (HOME may point to an unreachable directory, which Python does
not need).  Give absolute paths in the agent's argv: the working directory
is the same path in the new view when it exists there, else ``/``.
"""

from __future__ import annotations

import argparse
import ctypes
import enum
import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import netwatch
from netwatch.errors import LabError, run_handler

AGENT_USER: Final = "netwatch"
AGENT_CAPS: Final = ("net_raw", "net_admin")
MODULE: Final = "netwatch.lab.privilege"

# capabilities(7), in the kernel's order: a name's index is its number.
CAPABILITIES: Final = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill",
    "setgid", "setuid", "setpcap", "linux_immutable", "net_bind_service",
    "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
    "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time",
    "sys_tty_config", "mknod", "lease", "audit_write", "audit_control",
    "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
    "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)  # fmt: skip

_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_COVER_OPTIONS = "mode=0755,size=1m"  # directories and empty mount points only
_SEARCH = {"owner": stat.S_IXUSR, "group": stat.S_IXGRP, "other": stat.S_IXOTH}


def cap_mask(caps: Iterable[str]) -> int:
    """The kernel's bit mask of capability names (as in /proc/PID/status)."""
    mask = 0
    for name in caps:
        if name not in CAPABILITIES:
            raise LabError(f"unknown capability {name!r} (one of capabilities(7), no cap_ prefix)")
        mask |= 1 << CAPABILITIES.index(name)
    return mask


# --- who may reach what (pure: reads inode modes only) ----------------------------


def permission_class(st: os.stat_result, uid: int, gid: int, groups: Collection[int] = ()) -> str:
    """Which of a file's three permission classes applies to the user: the
    kernel takes the first that matches, so an owner gets no group bits."""
    if st.st_uid == uid:
        return "owner"
    if st.st_gid == gid or st.st_gid in groups:
        return "group"
    return "other"


def traversable(directory: Path, uid: int, gid: int, groups: Collection[int] = ()) -> bool:
    """May the user search (pass through) `directory`?  Root always may."""
    if uid == 0:
        return True
    try:
        st = os.stat(directory)
    except OSError:
        return False
    return bool(st.st_mode & _SEARCH[permission_class(st, uid, gid, groups)])


def blocked_ancestors(path: Path, uid: int, gid: int, groups: Collection[int] = ()) -> list[Path]:
    """The proper ancestors of `path` the user may not search, top first."""
    absolute = Path(os.path.abspath(path))
    return [a for a in reversed(absolute.parents) if not traversable(a, uid, gid, groups)]


def reachable(path: Path, uid: int, gid: int, groups: Collection[int] = ()) -> bool:
    """Can the user get to `path` (search every ancestor)?  Says nothing of
    the path's own mode."""
    return not blocked_ancestors(path, uid, gid, groups)


class StepKind(enum.Enum):
    COVER = "cover"  # a tmpfs (0755) over a blocked directory
    BIND = "bind"  # the original path, bound back at its own absolute path


@dataclass(frozen=True)
class Step:
    kind: StepKind
    path: Path


def plan_view(expose: Iterable[Path], can_search: Callable[[Path], bool]) -> list[Step]:
    """The mounts that make every exposed path reachable, in the order to make them.

    For each path, only the topmost blocked ancestor is covered: below it the
    chain is recreated on the tmpfs, searchable.  An exposed path inside
    another is reached through that one's bind, so only blocked directories
    between the two count (and the outer one must itself be searchable).
    Parents are mounted before children, so sorting by depth is the order."""
    paths = sorted({Path(os.path.normpath(p)) for p in expose}, key=lambda p: (len(p.parts), p))
    for p in paths:
        if not p.is_absolute():
            raise LabError(f"cannot expose {p}: not an absolute path")
    exposed = set(paths)
    steps: set[Step] = set()
    for p in paths:
        above = list(reversed(p.parents))[1:]  # from the top, without "/"
        anchor = next((a for a in reversed(above) if a in exposed), None)
        if anchor is not None:
            if not can_search(anchor):
                raise LabError(
                    f"cannot expose {p}: {anchor} is exposed as it is and the agent "
                    "user may not search it"
                )
            above = above[above.index(anchor) + 1 :]
        blocked = next((a for a in above if not can_search(a)), None)
        if blocked is not None:
            steps |= {Step(StepKind.COVER, blocked), Step(StepKind.BIND, p)}
    return sorted(steps, key=lambda s: (len(s.path.parts), s.path.as_posix(), s.kind.value))


# --- the user, its files ---------------------------------------------------------


def ensure_user(name: str = AGENT_USER) -> tuple[int, int]:
    """The (uid, gid) of system user `name`, created if missing (with its own
    group, no home, nologin shell).  Needs root to create."""
    if not _USER_NAME.fullmatch(name):
        raise LabError(f"agent user {name!r}: not a valid user name")
    found = user_ids(name)
    if found is not None:
        return found
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    try:
        grp.getgrnam(name)
        group = ["--gid", name]  # the group is there already (left by an earlier user)
    except KeyError:
        group = ["--user-group"]
    shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)), None)
    argv = [
        useradd, "--system", *group, "--no-create-home", "--home-dir", "/nonexistent",
        "--shell", shell or "/bin/false", "--comment", "netwatch agent", name,
    ]  # fmt: skip
    for _ in range(10):  # another process may be creating it (useradd's lock)
        try:
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise LabError(f"cannot create the agent user {name!r}: {useradd}: {exc}") from None
        found = user_ids(name)
        if found is not None:
            return found
        if "lock" not in result.stderr:
            break
        time.sleep(0.2)
    reason = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
    raise LabError(f"cannot create the agent user {name!r}: {reason}")


def user_ids(name: str) -> tuple[int, int] | None:
    """(uid, gid) of user `name`, None if there is none."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def grant(path: Path, uid: int, gid: int) -> None:
    """Give the agent user a directory it writes (its spool, its control
    socket's directory): chown it and everything in it, symlinks themselves
    and not their targets.  Only for what the lab owns, under its run dir."""
    try:
        os.chown(path, uid, gid, follow_symlinks=False)
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
    except OSError as exc:
        raise LabError(f"cannot give {path} to uid {uid}: {exc.strerror or exc}") from None


def runtime_paths() -> list[Path]:
    """What any netwatch process needs to start: this interpreter (venv and
    base installation, as named and resolved) and the project's own root
    (the editable install's checkout, or site-packages)."""
    named = {
        sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        os.path.dirname(os.path.dirname(os.path.abspath(netwatch.__file__))),
    }  # fmt: skip
    paths = {Path(os.path.abspath(p)) for p in named}
    return sorted(p for p in paths if not any(a in paths for a in p.parents))  # outermost only


# --- the wrapper ------------------------------------------------------------------


def confined_argv(
    argv: Sequence[str],
    *,
    user: str = AGENT_USER,
    caps: Sequence[str] = AGENT_CAPS,
    expose: Iterable[Path | str],
) -> list[str]:
    """`argv` run as `user` with exactly `caps`, each path of `expose` reachable
    at its own absolute path in a private mount namespace.  The result is
    run as root (the lab puts ``ip netns exec NS`` in front of it)."""
    found = user_ids(user)
    if found is None:
        raise LabError(f"no user {user!r} (netwatch.lab.privilege.ensure_user creates it)")
    uid, gid = found
    if uid == 0:
        raise LabError(f"user {user!r} is root: the agent must run as a non-root user")
    cap_mask(caps)  # one line for an unknown name, before anything starts
    if not argv:
        raise LabError("nothing to run")
    return [
        sys.executable, "-I", "-m", MODULE,
        f"--uid={uid}", f"--gid={gid}", f"--caps={','.join(caps)}",
        *(f"--expose={os.path.abspath(p)}" for p in expose),
        "--", *argv,
    ]  # fmt: skip


def main(args: Sequence[str] | None = None) -> int:
    """The trampoline: build the view, then exec setpriv (never returns on success)."""
    words = list(sys.argv[1:] if args is None else args)
    if "--" not in words:
        print(f"{MODULE}: usage: ... -- ARGV", file=sys.stderr)
        return 2
    split = words.index("--")
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    parser.add_argument("--caps", default="")
    parser.add_argument("--expose", action="append", default=[])
    opts = parser.parse_args(words[:split])
    argv = words[split + 1 :]
    caps = [c for c in opts.caps.split(",") if c]
    return run_handler(
        "netwatch lab: agent sandbox",
        lambda: _drop_and_exec(argv, opts.uid, opts.gid, caps, [Path(p) for p in opts.expose]),
    )


def _drop_and_exec(argv: list[str], uid: int, gid: int, caps: list[str], expose: list[Path]) -> int:
    if uid == 0 or not argv:
        raise LabError("refusing: needs a non-root uid and a command")
    cap_mask(caps)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise LabError("setpriv not found (util-linux)")
    paths: set[Path] = set()
    for p in expose:
        if not os.path.exists(p):
            raise LabError(f"cannot expose {p}: no such file or directory")
        paths |= {Path(os.path.abspath(p)), Path(os.path.realpath(p))}
    steps = plan_view(paths, lambda d: traversable(d, uid, gid))
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    _enter_view(steps)
    for p in sorted(paths):
        blocked = blocked_ancestors(p, uid, gid)
        if blocked:
            raise LabError(f"{p}: still unreachable for uid {uid} at {blocked[0]}")
        if not _usable(p, uid, gid):
            mode = stat.filemode(os.stat(p).st_mode)
            raise LabError(f"{p}: uid {uid} may not use it ({mode}); fix its mode or grant() it")
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")
    spec = ",".join(["-all", *(f"+{c}" for c in caps)])
    os.execv(
        setpriv,
        [
            setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
            f"--bounding-set={spec}", f"--inh-caps={spec}", f"--ambient-caps={spec}",
            "--no-new-privs", "--", *argv,
        ],
    )  # fmt: skip


def _usable(path: Path, uid: int, gid: int) -> bool:
    """A directory the user may search, a file it may read."""
    st = os.stat(path)
    cls = permission_class(st, uid, gid)
    need = _SEARCH[cls] if stat.S_ISDIR(st.st_mode) else _SEARCH[cls] << 2  # x -> r
    return bool(st.st_mode & need)


# --- mount(2) and unshare(2) through libc (Python 3.11 has no os.unshare) ----------

_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x2, 0x4, 0x8
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000


def _enter_view(steps: Sequence[Step]) -> None:
    """Unshare a private mount namespace and make `steps` in it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    libc.unshare.argtypes = [ctypes.c_int]

    def check(result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise LabError(f"{what}: {os.strerror(err)}")

    def mount(source: str, target: Path, fstype: str | None, flags: int, data: str) -> None:
        check(
            libc.mount(
                source.encode(),
                os.fsencode(target),
                None if fstype is None else fstype.encode(),
                flags,
                data.encode(),
            ),
            f"mount {target}",
        )

    check(libc.unshare(_CLONE_NEWNS), "unshare a mount namespace")
    mount("none", Path("/"), None, _MS_REC | _MS_PRIVATE, "")
    # Open what is to be bound back before anything covers it; O_PATH opens
    # anything (a socket, a 0000 file) and reads nothing.
    fds = {
        s.path: os.open(s.path, os.O_PATH | os.O_CLOEXEC) for s in steps if s.kind is StepKind.BIND
    }
    old_umask = os.umask(0o022)
    try:
        for step in steps:
            if step.kind is StepKind.COVER:
                flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
                mount("netwatch-view", step.path, "tmpfs", flags, _COVER_OPTIONS)
                continue
            fd = fds[step.path]
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.makedirs(step.path, mode=0o755, exist_ok=True)
            else:
                os.makedirs(step.path.parent, mode=0o755, exist_ok=True)
                os.close(os.open(step.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            mount(f"/proc/self/fd/{fd}", step.path, None, _MS_BIND | _MS_REC, "")
    finally:
        os.umask(old_umask)
        for fd in fds.values():
            os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
