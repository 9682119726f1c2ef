"""``python -m netwatch.emulator``: run one emulated link, or talk to one.

    run  --link NAME --end-a NETNS:IFNAME:ADDR/PREFIX --end-b ... --control PATH
         [--a-to-b PROFILE_JSON] [--b-to-a PROFILE_JSON] [--mtu 1500] [--seed N]
    ctl  --control PATH [REQUEST_JSON]     (default request: {"op":"get"})

Exit status: 0 after a clean stop, 1 on a runtime failure, 2 on bad input
or a link that cannot be built (one line on stderr says why).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import NoReturn

from netwatch.emulator.control import EmulatorClient, EmulatorError
from netwatch.emulator.ends import EndSpec, SetupError, create_end
from netwatch.emulator.engine import Engine, TunGone
from netwatch.emulator.profile import Profile, ProfileError
from netwatch.emulator.server import ControlSocketInUse, remove_stale

PROG = "netwatch-emulator"
MAX_UNIX_PATH = 107


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(message)


def _fail(message: str, status: int = 2) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m netwatch.emulator", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="emulate one link between two namespaces")
    run.add_argument("--link", required=True, help="link name, reported by the control socket")
    run.add_argument("--end-a", required=True, metavar="NETNS:IFNAME:ADDR/PREFIX")
    run.add_argument("--end-b", required=True, metavar="NETNS:IFNAME:ADDR/PREFIX")
    run.add_argument("--control", required=True, metavar="SOCKET_PATH")
    run.add_argument("--a-to-b", default="{}", metavar="PROFILE_JSON")
    run.add_argument("--b-to-a", default="{}", metavar="PROFILE_JSON")
    run.add_argument("--mtu", type=int, default=1500)
    run.add_argument("--seed", type=int, default=None, help="seed for loss and jitter")
    ctl = sub.add_parser("ctl", help="send one control request and print the reply")
    ctl.add_argument("--control", required=True, metavar="SOCKET_PATH")
    ctl.add_argument("request", nargs="?", default='{"op":"get"}', metavar="REQUEST_JSON")
    ctl.add_argument("--timeout", type=float, default=5.0)
    return parser


def _profile(text: str, option: str) -> Profile:
    try:
        return Profile.from_json(json.loads(text))
    except (ValueError, ProfileError) as exc:
        _fail(f"{option}: {exc}")


def _run(args: argparse.Namespace) -> int:
    if not args.link.strip():
        _fail("--link must not be empty")
    try:
        end_a = EndSpec.parse(args.end_a)
        end_b = EndSpec.parse(args.end_b)
    except ValueError as exc:
        _fail(str(exc))
    a_to_b = _profile(args.a_to_b, "--a-to-b")
    b_to_a = _profile(args.b_to_a, "--b-to-a")
    v6 = 6 in (end_a.address.version, end_b.address.version)
    if not (1280 if v6 else 68) <= args.mtu <= 65535:
        _fail(f"--mtu {args.mtu} out of range ({1280 if v6 else 68}..65535)")
    control = os.path.abspath(args.control)
    if len(control.encode()) > MAX_UNIX_PATH:
        _fail(f"--control path longer than {MAX_UNIX_PATH} bytes")
    if not os.path.isdir(os.path.dirname(control)):
        _fail(f"--control directory {os.path.dirname(control)} does not exist")
    if os.geteuid() != 0:
        _fail("must run as root (creates TUN devices and configures namespaces)")
    try:
        remove_stale(control)
    except ControlSocketInUse as exc:
        _fail(str(exc))

    fds: list[int] = []
    try:
        try:
            tag = f"nwe{os.getpid():x}"
            fds.append(create_end(end_a, temp_name=tag + "a", mtu=args.mtu))
            fds.append(create_end(end_b, temp_name=tag + "b", mtu=args.mtu))
        except SetupError as exc:
            _fail(str(exc))
        engine = Engine(
            link=args.link,
            fd_a=fds[0],
            fd_b=fds[1],
            a_to_b=a_to_b,
            b_to_a=b_to_a,
            seed=args.seed,
            control_path=control,
            info={"ends": {"a": str(end_a), "b": str(end_b)}, "mtu": args.mtu},
        )
        try:
            engine.run()
        except ControlSocketInUse as exc:
            _fail(str(exc))
        except TunGone as exc:
            _fail(f"link {args.link} lost a TUN device: {exc}", status=1)
    finally:
        for fd in fds:  # closing a non-persistent TUN fd deletes the device
            os.close(fd)
    print(f"{PROG}: link {args.link} stopped", file=sys.stderr)
    return 0


def _ctl(args: argparse.Namespace) -> int:
    try:
        request = json.loads(args.request)
    except ValueError as exc:
        _fail(f"REQUEST_JSON: {exc}")
    try:
        reply = EmulatorClient(args.control, timeout=args.timeout).request(request)
    except EmulatorError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    print(json.dumps(reply, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    return _ctl(args)


if __name__ == "__main__":
    sys.exit(main())
