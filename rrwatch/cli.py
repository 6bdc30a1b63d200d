"""Command line: `rrwatch run` and `rrwatch demo`. main(argv) -> exit status."""

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
    run = commands.add_parser("run", help="run the daemon in the foreground")
    for option in OPTIONS:
        flag = "--" + option.name.replace("_", "-")
        text = f"{option.help} (env {', '.join(option.env)}; default {option.default or 'none'})"
        text = text.replace("%", "%%")  # argparse formats help with %
        if option.switch:
            run.add_argument(flag, dest=option.name, action="store_true", default=None, help=text)
        else:
            run.add_argument(flag, dest=option.name, metavar=option.metavar, default=None,
                             help=text)
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    demo = commands.add_parser("demo", help="run the daemon against a local simulated cluster")
    demo.add_argument("-v", "--verbose", action="store_true", help="log every step of the daemon")
    return parser


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
    _logging(args.verbose)
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

    from rrwatch.daemon import serve

    try:
        trio.run(serve, config)
    except KeyboardInterrupt:
        pass
    return 0
