"""The ``patron`` command: one sub-command per job.

Each package owns its commands (features/cli.py, training/cli.py, serving/cli.py); this module
only mounts them. Heavy imports happen inside the commands so ``patron --help`` stays fast.
"""

from __future__ import annotations

import typer
from pydantic import ValidationError

from features.cli import clv_app, data_app, features_app
from patron.cliutil import fail, setup_logging
from patron.settings import get_settings
from serving.cli import ab_app, picks_app, rules_app, serve
from training.cli import evaluate, models_app, recommend, train, tune

app = typer.Typer(
    name="patron",
    help="Patron: loyalty-aware recommendations. Results print as one JSON line on stdout.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data", help="Import, validate and synthesise input data.")
app.add_typer(features_app, name="features", help="Build and publish customer/item features.")
app.add_typer(
    clv_app, name="clv", help="Fit and inspect the CLV models (BG/NBD, Pareto/NBD, Gamma-Gamma)."
)
app.command(help="Train ALS + co-purchase models, log to MLflow, optionally register.")(train)
app.command(help="Evaluate models against baselines (benchmark and temporal protocols).")(evaluate)
app.command(help="Choose hyperparameters on a validation split; logs every trial.")(tune)
app.command(help="Write top-k picks for every customer in a bundle (offline evaluation).")(
    recommend
)
app.add_typer(models_app, name="models", help="List, promote and roll back registered models.")
app.command(help="Start the recommendation API.")(serve)
app.add_typer(rules_app, name="rules", help="Validate business-rule files.")
app.add_typer(picks_app, name="picks", help="Export personalised email picks.")
app.add_typer(ab_app, name="ab", help="Measured A/B tests: the decision report.")


@app.command("embedded-redis")
def embedded_redis(
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(6390, help="Port to listen on."),
) -> None:
    """Run the embedded in-memory Redis-protocol server (demo default; not for production)."""
    from patron.embedded_redis import serve as serve_embedded

    serve_embedded(host, port)


@app.callback()
def _root(
    log_level: str = typer.Option(None, help="Log level (default PATRON_LOG_LEVEL or INFO)."),
) -> None:
    try:
        settings = get_settings()
    except ValidationError as exc:  # a PATRON_* variable with a bad value: say which, one line
        bad = "; ".join(
            f"PATRON_{'_'.join(str(p) for p in e['loc']).upper()}={e.get('input')!r}: {e['msg']}"
            for e in exc.errors()
        )
        raise fail(f"invalid setting {bad}", 2) from None
    setup_logging(log_level or settings.log_level)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
