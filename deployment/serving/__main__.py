"""Run the scoring service with uvicorn: ``python -m deployment.serving [--host H] [--port P]``.

Settings come from the environment (``DETOPS_MODEL_DIR``, ``DETOPS_API_KEY`` ..., see
:mod:`deployment.serving.settings`). This is the entry point of the local target and of the
serving container (AKS / Azure ML, SageMaker: port 8080, ``/invocations`` and ``/ping``).
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    """Parse ``--host``/``--port`` (default ``$DETOPS_HOST``/``$DETOPS_PORT``, 127.0.0.1:8080) and serve."""
    from deployment.serving.app import create_app, run_server
    from deployment.serving.settings import ServerSettings, load_settings

    server = ServerSettings()
    p = argparse.ArgumentParser(prog="python -m deployment.serving")
    p.add_argument("--host", default=server.host)
    p.add_argument("--port", type=int, default=server.port)
    args = p.parse_args(argv)
    run_server(create_app(load_settings()), args.host, args.port, server.log_level, server.max_connections)


if __name__ == "__main__":  # pragma: no cover
    main()
