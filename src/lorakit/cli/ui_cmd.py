"""`lorakit ui`: the local web server (job queue, live training events, the JSON API)."""

from __future__ import annotations

import argparse

from .common import add_command


def register(sub) -> None:
    p = add_command(
        sub,
        "ui",
        help="Start the web UI server: a job queue, live training progress and a JSON API.",
        description="Serve lorakit in the browser and to scripts. Jobs (trainings, grids, merges, ...) wait in a "
        "queue stored in WORKSPACE/lorakit.db and run one at a time per device, each in its own process: they "
        "survive a restart of the server, which reattaches to them. Safe by default: it listens on 127.0.0.1 only; "
        "on any other address every request needs a token, and no request reaches files outside the workspace "
        "(and the folders allowed in WORKSPACE/settings.toml). The API is documented at /docs.",
    )
    p.add_argument(
        "--workspace",
        default="lorakit-workspace",
        metavar="DIR",
        help="The folder for datasets/, configs/, runs/, models/, the job database and settings.toml; "
        "created with its subfolders when missing. Default: ./lorakit-workspace.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="Address to listen on. Default 127.0.0.1: only this computer can connect. Any other address "
        "(0.0.0.0 = every network interface) requires a token.",
    )
    p.add_argument("--port", type=int, default=7860, metavar="N", help="Port to listen on. Default: 7860.")
    p.add_argument(
        "--token",
        metavar="T",
        help="The token every request must carry (Authorization: Bearer T, or log in at /login in a browser). "
        "Default: none on 127.0.0.1; on other addresses a new random token, printed at start. "
        "The environment variable LORAKIT_UI_TOKEN is read too, so the token need not be on the command line.",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..web.app import create_app
    from ..web.security import environment_token, is_loopback, new_token
    from ..web.workspace import Workspace

    workspace = Workspace.open(args.workspace)
    token = args.token or environment_token()
    generated = False
    if token is None and not is_loopback(args.host):
        token, generated = new_token(), True
    host = f"[{args.host}]" if ":" in args.host else args.host
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else host
    print(f"lorakit ui: workspace {workspace.root}")
    if token is None:
        print(f"lorakit ui: http://{shown}:{args.port}/  (only this computer can connect; API docs at /docs)")
    else:
        print(f"lorakit ui: http://{shown}:{args.port}/login?token={token}")
        print(
            "lorakit ui: " + ("a new token was made for this address: " if generated else "token: ") + token
        )
        print("lorakit ui: scripts send 'Authorization: Bearer TOKEN'; API docs at /docs")
    app = create_app(workspace, token=token)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=2,
        access_log=False,
    )
    uvicorn.Server(config).run()
    return 0
