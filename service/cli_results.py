"""``flask --app service results export KEY --format csv|json`` for scripts.

Register with ``app.cli.add_command(results)`` (service/cli.py).
"""

import json
import sys

import click

from .analysis.export import results_csv
from .domain import experiments as domain
from .domain.errors import DomainError
from .extensions import db

results = click.Group("results", help="Experiment results.")


@results.command("export")
@click.argument("key")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@click.option("--dimension", default=None, help="Also break results down by this exposure attribute.")
@click.option("--metric", default=None, help="Only this metric.")
@click.option("--engine", type=click.Choice(["frequentist", "bayesian"]), default=None)
@click.option("--sequential/--no-sequential", default=None)
@click.option("--cuped/--no-cuped", default=None)
@click.option("--alpha", type=float, default=None)
@click.option("--correction", type=click.Choice(["holm", "bh", "none"]), default=None)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to this file instead of standard output.")
def export(key, fmt, dimension, metric, engine, sequential, cuped, alpha, correction, output):
    """Print (or write) the results of experiment KEY."""
    overrides = {"engine": engine, "sequential": sequential, "cuped": cuped, "alpha": alpha}
    if correction is not None:
        overrides["correction"] = correction
    try:
        document = domain.results(key, dimension=dimension, metric=metric, **overrides)
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        db.session.rollback()
    text = results_csv(document) if fmt == "csv" else json.dumps(document, indent=2) + "\n"
    if output:
        with open(output, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
