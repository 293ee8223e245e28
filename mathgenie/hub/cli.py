"""``mathgenie hub serve --root DIR --port N``: run the local Hub in the foreground."""

from __future__ import annotations

import argparse
import logging
import os

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("hub", help="run the local Hugging Face Hub server")
    sub = parser.add_subparsers(dest="hub_command", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="serve repos stored under --root",
                           description="Serve a Hub-API-compatible server. Clients: export "
                                       "HF_ENDPOINT=http://HOST:PORT HF_HUB_DISABLE_XET=1.")
    serve.add_argument("--root", required=True, help="directory holding the repos (created if missing)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8089, help="port (default 8089; 0 = any free port)")
    serve.add_argument("--token", default=None,
                       help="token required on writes (default: $MATHGENIE_HUB_TOKEN; none = open)")
    serve.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from mathgenie.hub.server import UVICORN_OPTIONS, HubApp

    token = args.token or os.environ.get("MATHGENIE_HUB_TOKEN") or None
    app = HubApp(args.root, token=token)
    logger.info("local hub on http://%s:%d serving %s (writes %s)", args.host, args.port, args.root,
                "need the token" if token else "are open")
    logger.info("clients: export HF_ENDPOINT=http://%s:%d HF_HUB_DISABLE_XET=1", args.host, args.port)
    logger.info("dataset viewer: http://%s:%d/ in a browser", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", lifespan="off", **UVICORN_OPTIONS)
    return 0
