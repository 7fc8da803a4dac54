"""Flask commands: ``flask --app service tokens create --role admin --name NAME``."""

import os

import click
import sqlalchemy as sa

from . import worker
from .cli_results import results
from .domain import SYSTEM, Actor
from .domain import tokens as token_domain
from .extensions import db
from .flags_as_code.cli import commands as flags_as_code_commands
from .models import ROLES, Token

tokens = click.Group("tokens", help="Manage admin API tokens.")


@tokens.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--name", required=True)
def create_token(role: str, name: str) -> None:
    """Create a token and print it (the only time it is shown)."""
    _, secret = token_domain.create_token(Actor(name="cli"), name, role)
    click.echo(secret)


@tokens.command("dev")
@click.option("--file", "path", type=click.Path(dir_okay=False), required=True,
              help="Where the development token is kept between runs.")
def dev_token(path: str) -> None:
    """Print the development admin token, creating it (and the file) if needed."""
    if os.path.exists(path):
        with open(path) as handle:
            secret = handle.read().strip()
        if token_domain.find_token(secret) is not None:
            click.echo(secret)
            return
    _, secret = token_domain.create_token(SYSTEM, "development", "admin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    click.echo(secret)


@tokens.command("list")
def list_tokens() -> None:
    for token in db.session.scalars(sa.select(Token).where(Token.revoked_at.is_(None))):
        click.echo(f"{token.id}\t{token.role}\t{token.name}\t{token.prefix}...")


def init_app(app) -> None:
    app.cli.add_command(tokens)
    app.cli.add_command(results)
    for command in flags_as_code_commands():
        app.cli.add_command(command)
    worker.init_app(app)
