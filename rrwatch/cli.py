"""Command line: `rrwatch run`, `plan`, `verify`, `status`, `demo`. main(argv) -> exit status."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import trio

from rrwatch import config as config_mod
from rrwatch.config import EX_CONFIG, OPTIONS, ConfigError

log = logging.getLogger("rrwatch")

EPILOG = """\
examples:
  rrwatch run -v                      run in the foreground, debug logs
  ETCD_ENDPOINTS=https://10.0.0.1:2379 ETCD_CA_CERT_FILE=ca.pem ETCD_CERT_FILE=c.pem \\
    ETCD_KEY_FILE=k.pem rrwatch run --dry-run
  rrwatch plan --detailed-exitcode    what would be written now (exit 2: changes pending)
  rrwatch verify --failures 1         do all routes reach, even after losing any one RR?
  rrwatch status --output json        the mesh; on an RR host, its BIRD's sessions too
  rrwatch demo                        a local TLS etcd, a simulated cluster, the daemon at work
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrwatch",
        description="Keeps a Calico cluster's BGP route-reflector mesh right.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = _with_options(commands.add_parser("run", help="run the daemon in the foreground"))
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    plan = _with_options(commands.add_parser(
        "plan", help="print the writes the daemon would make now, and check their result"))
    plan.add_argument("--detailed-exitcode", action="store_true",
                      help="exit 2 when changes are pending, 0 when there are none")
    verify = _with_options(commands.add_parser(
        "verify", help="check that the sessions in etcd carry every node's routes to every node"))
    verify.add_argument("--failures", type=int, choices=(0, 1), default=0,
                        help="also check after the loss of any one route reflector (1)")
    status = _with_options(commands.add_parser(
        "status", help="zones, RRs, clients and RR hosts; on an RR host, its BIRD sessions"))
    status.add_argument("--output", choices=("text", "json"), default="text",
                        help="text for people, json for scripts")
    demo = commands.add_parser("demo", help="run the daemon against a local simulated cluster")
    demo.add_argument("-v", "--verbose", action="store_true", help="log every step of the daemon")
    return parser


def _with_options(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The config options as flags (they override the environment)."""
    for option in OPTIONS:
        flag = "--" + option.name.replace("_", "-")
        text = f"{option.help} (env {', '.join(option.env)}; default {option.default or 'none'})"
        text = text.replace("%", "%%")  # argparse formats help with %
        if option.switch:
            command.add_argument(flag, dest=option.name, action="store_true", default=None,
                                 help=text)
        else:
            command.add_argument(flag, dest=option.name, metavar=option.metavar, default=None,
                                 help=text)
    return command


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # requests and urllib3 say every connection at DEBUG; that is not ours to show.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _logging(getattr(args, "verbose", False))
    if args.command == "demo":
        from rrwatch import demo

        return demo.main(verbose=args.verbose)
    try:
        config = config_mod.load(
            os.environ, {o.name: getattr(args, o.name) for o in OPTIONS}
        )
    except ConfigError as e:
        print(f"rrwatch: configuration: {e}", file=sys.stderr)
        return EX_CONFIG

    if args.command == "plan":
        from rrwatch import commands

        return commands.plan(config, detailed_exitcode=args.detailed_exitcode)
    if args.command == "verify":
        from rrwatch import commands

        return commands.verify_mesh(config, failures=args.failures)
    if args.command == "status":
        from rrwatch import commands

        return commands.status(config, output=args.output)

    from rrwatch.daemon import serve

    try:
        trio.run(serve, config)
    except KeyboardInterrupt:
        pass
    except ConfigError as e:
        print(f"rrwatch: configuration: {e}", file=sys.stderr)
        return EX_CONFIG
    return 0
