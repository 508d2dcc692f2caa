"""``patron serve``, ``patron rules`` and ``patron picks`` commands."""

from __future__ import annotations

import typer

from patron.cliutil import UserError, command, fail
from serving.cli_ab import ab_app
from serving.cli_rules import picks_app, rules_app
from serving.settings import ServingSettings

__all__ = ["ab_app", "picks_app", "rules_app", "serve"]


@command
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    workers: int = typer.Option(1, min=1, max=64, help="Worker processes (each loads the model)."),
    log_level: str = typer.Option(
        "info", help="Log level: critical, error, warning, info or debug."
    ),
) -> None:
    """Run the API under uvicorn (uvloop + httptools); with --workers N, N processes, each
    on its own SO_REUSEPORT socket. Settings come from PATRON_* variables."""
    import uvicorn
    from pydantic import ValidationError

    from serving.logs import LEVELS
    from serving.settings import get_serving_settings

    if log_level.lower() not in LEVELS:
        raise UserError(f"--log-level must be one of {', '.join(LEVELS)}, got {log_level!r}")
    try:
        settings = get_serving_settings()  # refuse bad settings before forking workers
    except ValidationError as exc:
        msgs = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise UserError(f"invalid serving settings: {msgs}") from None
    _check_champion(settings)
    from serving.workers import SUPPORTED, run_workers, uvicorn_options

    if workers > 1 and SUPPORTED:  # one SO_REUSEPORT socket per worker (serving/workers.py)
        try:
            code = run_workers(host, port, workers, log_level)
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        if code:
            raise typer.Exit(code)
        return
    uvicorn.run(workers=workers, **uvicorn_options(host, port, log_level))


def _check_champion(settings: ServingSettings) -> None:
    """Without a bundle, the registry must know the alias served, else one line and exit 3
    (not a worker's traceback). An unreachable registry is left to the workers: they serve
    the cached bundle or exit 3 themselves."""
    if settings.bundle is not None:
        return
    from serving.errors import NotFound
    from serving.registry_client import RegistryClient, RegistryUnreachable

    registry = RegistryClient(settings.tracking_uri(), settings.model_name, settings.cache_dir())
    try:
        registry.version_of(settings.model_alias)
    except NotFound:
        uri = registry.uri(settings.model_alias)
        raise fail(
            f"nothing to serve: {uri} does not exist in {settings.tracking_uri()} "
            "(train with --register and promote a model, or set PATRON_BUNDLE)",
            3,
        ) from None
    except RegistryUnreachable:
        pass
