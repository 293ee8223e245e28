"""The one `mathgenie` command. Each subcommand lives in a light module of its package that exposes
``add_parser(subparsers)`` (registering ``func=main``); heavy imports (torch, vllm) happen inside ``main`` only."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> module providing add_parser(subparsers)
COMMANDS = {
    "hub": "mathgenie.hub.cli",  # mathgenie hub serve --root DIR --port N
    "seed": "mathgenie.builders.cli",  # build the seed dataset from the Hub or local files
    "push": "mathgenie.upload_cli",  # push a stage dataset or a model folder
    "run": "mathgenie.run_cli",  # the pipeline: mathgenie run CONFIG.yaml (locally or on Ray)
    "demo": "mathgenie.demo",  # the offline end-to-end demo
    "train": "mathgenie.training.cli",  # mathgenie train CONFIG.yaml
    "eval": "mathgenie.evaluation.cli",  # mathgenie eval ...
    "decontaminate": "mathgenie.evaluation.decontamination_cli",
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mathgenie", description="MathGenie-style synthetic math data: build, generate, publish, train, evaluate."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # one INFO line per HTTP request of the Hub client drowns our own messages
        for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Exception as e:  # noqa: BLE001 -- only a network failure is turned into a message; the rest re-raises
        if not _unreachable(e):
            raise
        from huggingface_hub import constants

        raise SystemExit(f"mathgenie {args.command}: cannot reach the Hub at {constants.ENDPOINT} ({e}). Offline or "
                         "air-gapped? Start a local Hub (`mathgenie hub serve`) and set HF_ENDPOINT to it, or give "
                         "local paths instead of repo ids.") from None


def _unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a failure to connect, as raised by the Hub client's HTTP stack."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        names = {cls.__name__ for cls in type(error).__mro__}
        if isinstance(error, ConnectionError) or names & {"ConnectError", "ConnectTimeout", "gaierror"}:
            return True
        error = error.__cause__ or error.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
