"""Command line: main(argv) -> exit status. One subcommand per job; see `rrwatch --help`."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rrwatch import config as config_mod
from rrwatch import logs
from rrwatch.config import OPTIONS, Config
from rrwatch.core.text import printable
from rrwatch.errors import ConfigError, ExitStatus, RrwatchError

EPILOG = """\
configuration: a TOML file (--config, $RRWATCH_CONFIG, or /etc/rrwatch/rrwatch.toml when it
exists), then the environment, then flags, each over the one before. A policy object in etcd
(<prefix>policy) overrides the [policy] options it sets, live.

examples:
  rrwatch check                       is the config right, and can etcd be reached with it?
  rrwatch run -v                      run in the foreground, debug logs
  rrwatch run --dry-run --config ./rrwatch.toml
  rrwatch plan --detailed-exitcode    what would be written now (exit 2: changes pending)
  rrwatch verify --failures 1         do all routes reach, even after losing any one RR?
  rrwatch status --output json        zones, RRs, clients, sessions; on an RR host, BIRD's
  rrwatch graph --format svg -o mesh.svg
  rrwatch register 10.0.0.5 --id 224.0.0.1  an RR host that runs no rrwatch
  rrwatch report --node node-7        this node's BGP sessions, from calico-node's BIRDs
  rrwatch mesh off                    the last step of a migration, once the RR sessions are up
  rrwatch demo                        a local TLS etcd, a simulated cluster, the daemon at work

exit status: 0 done; 1 verify or plan found routes that do not reach; 2 plan found changes
(--detailed-exitcode); 69 etcd could not be reached; 77 etcd refused a permission; 78 a
configuration or TLS problem, or a `graph -o` file that cannot be written.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrwatch",
        description="Keeps a Calico cluster's BGP route-reflector mesh right.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        return _with_options(sub, name)

    run = command("run", "run the daemon in the foreground (systemd runs it so too)")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    plan = command("plan", "print the writes the daemon would make now, and check their result")
    plan.add_argument("--detailed-exitcode", action="store_true",
                      help="exit 2 when changes are pending, 0 when there are none")
    verify = command("verify",
                     "check that the sessions in etcd carry every node's routes to every node")
    verify.add_argument("--failures", type=int, choices=(0, 1), default=0,
                        help="also check after the loss of any one route reflector (1)")
    status = command("status", "zones, RRs, clients and sessions; on an RR host, BIRD's own")
    status.add_argument("--output", choices=("text", "json"), default="text",
                        help="text for people, json for scripts")
    command("check", "check the config, the TLS files, etcd's reachability and the"
                     " permissions rrwatch needs there; change nothing")
    register = command("register", "register an RR host that runs no rrwatch (a key without"
                                   " a lease: it stays until unregistered)")
    register.add_argument("ips", nargs="+", type=_ip, metavar="IP",
                          help="the host's BGP addresses (one IPv4, one IPv6 at most)")
    register.add_argument("--id", dest="host_cluster_id", type=_cluster_id, default=None,
                          metavar="CLUSTER_ID",
                          help="the host's cluster ID (default: BIRD uses its router ID)")
    unregister = command("unregister", "remove a registration made by `rrwatch register`")
    unregister.add_argument("ips", nargs="+", type=_ip, metavar="IP")
    graph = command("graph", "draw the mesh as Graphviz DOT, or SVG (needs Graphviz)")
    graph.add_argument("--format", choices=("dot", "svg"), default="dot")
    graph.add_argument("--family", type=int, choices=(4, 6), default=4)
    graph.add_argument("--max-clients", type=int, default=50, metavar="N",
                       help="draw a zone's clients as one node past N (default 50)")
    graph.add_argument("-o", "--out", metavar="FILE", help="write here instead of stdout")
    mesh = command("mesh", "turn Calico's node-to-node mesh off (only when every client has"
                           " Established sessions to enough RRs, as reported) or on")
    mesh.add_argument("state", choices=("off", "on"))
    mesh.add_argument("--rrs", type=int, default=2, metavar="K",
                      help="off: each client needs Established sessions to K RRs, or to all"
                           " of its RRs when it has fewer (default 2)")
    report = command("report", "report this node's BGP sessions, as its BIRD has them, in etcd"
                               " (on every node that may become an RR)")
    report.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    demo = commands.add_parser("demo", help="run the daemon against a local simulated cluster")
    demo.add_argument("-v", "--verbose", action="store_true", help="log every step of the daemon")
    return parser


def _text(flag: object) -> object:
    """A flag's text; a list option's flags given more than once, joined as in the
    environment."""
    return ",".join(flag) if isinstance(flag, list) else flag


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def _cluster_id(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 cluster ID") from None


def _with_options(command: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The config file, and the config options as flags (over the file and the environment);
    an option of some commands only is a flag of those only. A list option's flag may be
    given again for each item."""
    command.add_argument("--config", metavar="PATH",
                         help=f"TOML config file (env {config_mod.FILE_ENV}; default"
                              f" {config_mod.DEFAULT_FILE} when it exists)")
    for option in OPTIONS:
        if option.commands and name not in option.commands:
            continue
        text = (f"{option.help} ([{option.key.rpartition('.')[0] or 'top level'}]"
                f" {option.key.rpartition('.')[2]}; env {', '.join(option.env)};"
                f" default {option.default or 'none'})")
        text = text.replace("%", "%%")  # argparse formats help with %
        if option.switch:
            command.add_argument(option.flag, dest=option.name, action="store_true",
                                 default=None, help=text)
        else:
            command.add_argument(option.flag, dest=option.name, metavar=option.metavar,
                                 default=None, help=text,
                                 action="append" if option.many else "store")
    return command


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "ips", None) and len({ipaddress.ip_address(ip).version
                                           for ip in args.ips}) < len(args.ips):
        parser.error("one IPv4 and one IPv6 address at most")
    verbose = getattr(args, "verbose", False)
    if args.command == "demo":
        logs.setup(verbose=verbose)
        from rrwatch.cli import demo

        return demo.main(verbose=verbose)
    flags = {o.name: _text(getattr(args, o.name, None)) for o in OPTIONS} | {"config": args.config}
    try:
        config = config_mod.load(os.environ, flags)
    except ConfigError as e:
        if args.command == "check":  # a report, one line per finding
            for problem in e.problems:
                print(printable(f"FAIL {problem}"))
        else:  # one line, whatever a path or a value in it holds
            print(printable(f"rrwatch: configuration: {e}"), file=sys.stderr)
        return e.status
    logs.setup(verbose=verbose, fmt=config.log_format)
    try:
        return _command(args, config, flags)
    except RrwatchError as e:  # a failure the command did not report itself
        print(printable(f"rrwatch: {e}"), file=sys.stderr)
        return e.status
    except BrokenPipeError:  # `rrwatch status | head`: the reader has gone; nothing to say
        # Python would fail once more at exit, flushing into the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.FAILED


def _command(args: argparse.Namespace, config: Config, flags: Mapping[str, Any]) -> int:
    from rrwatch.cli import commands

    if args.command == "run":
        from rrwatch.daemon.run import main as run

        return run(config, flags)
    if args.command == "plan":
        return commands.plan(config, detailed_exitcode=args.detailed_exitcode)
    if args.command == "verify":
        return commands.verify_mesh(config, failures=args.failures)
    if args.command == "status":
        return commands.status(config, output=args.output)
    if args.command == "graph":
        return commands.graph(config, fmt=args.format, family=args.family,
                              max_clients=args.max_clients, out=args.out)
    if args.command == "check":
        from rrwatch.cli.check import check

        return check(config)
    if args.command == "mesh":
        from rrwatch.cli.mesh import mesh

        return mesh(config, args.state == "on", rrs=args.rrs)
    if args.command == "report":
        from rrwatch.daemon.report import main as report

        return report(config)
    return commands.registration(config, args.ips,
                                 cluster_id=getattr(args, "host_cluster_id", None) or "",
                                 remove=args.command == "unregister")
