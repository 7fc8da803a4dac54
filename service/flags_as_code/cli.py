"""Flask commands: ``export``, ``apply``, ``import-launchdarkly``, ``import-unleash``.

Registered by service/cli.py. Usage in docs/flags-as-code.md.
"""

import json
import sys

import click

from ..domain import Actor
from ..domain.errors import DomainError
from ..importers import launchdarkly, unleash
from .apply import apply
from .document import FORMATS, MAX_DOCUMENT_BYTES, dump, parse
from .export import export_document


def _write_text(text: str, output: str | None) -> None:
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        click.echo(text, nl=False)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(MAX_DOCUMENT_BYTES + 1)


def _format_of(path: str, fmt: str | None) -> str | None:
    if fmt:
        return fmt
    if path.endswith((".yaml", ".yml")):
        return "yaml"
    if path.endswith(".json"):
        return "json"
    return None


def _fail(exc: DomainError) -> None:
    lines = [f"Error: {exc.message}"]
    for path, messages in sorted(exc.details.items()):
        listed = messages if isinstance(messages, list) else [messages]
        lines.extend(f"  {path}: {message}" for message in listed)
    click.echo("\n".join(lines), err=True)
    sys.exit(1)


@click.command("export")
@click.option("--environment", "-e", required=True, help="Environment key.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="yaml", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to this file instead of standard output.")
def export_command(environment: str, fmt: str, output: str | None) -> None:
    """Write the environment's flags, segments and metrics as a document."""
    try:
        document = export_document(environment)
    except DomainError as exc:
        _fail(exc)
    _write_text(dump(document, fmt), output)


def _print_result(result: dict) -> None:
    verb = "Would apply" if result["dry_run"] else "Applied"
    summary = result["summary"]
    click.echo(f"{verb} to {result['environment']}: {summary['created']} created, {summary['changed']} changed, "
               f"{summary['unchanged']} unchanged.")
    for section in ("flags", "segments", "metrics", "holdouts"):
        for item in result[section]:
            if item["status"] == "unchanged":
                continue
            click.echo(f"  {item['status']:8} {section[:-1]} {item['key']}")
            for change in item["changes"]:
                click.echo(f"           {change['path']}: {json.dumps(change['before'])} -> "
                           f"{json.dumps(change['after'])}")
    for warning in result["warnings"]:
        click.echo(f"  warning  {warning['path']}: {warning['message']}")
    words = {"opened": ("would open", "opened"), "updated": ("would update", "updated (new revision)"),
             "pending": ("pending", "pending")}
    for proposal in result.get("change_requests", []):
        word = words[proposal["status"]][0 if result["dry_run"] else 1]
        ident = f" #{proposal['id']}" if proposal["id"] else ""
        click.echo(f"  change request{ident} {word}: targeting of {proposal['flag']} ({proposal['state']})")


@click.command("apply")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Validate and print the diff; change nothing.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Document format (default: from the file name, else detected).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--actor", default="cli", show_default=True, help="Name recorded in the audit log.")
@click.option("--comment", default=None, help="Comment recorded with every audit entry.")
def apply_command(path: str, dry_run: bool, fmt: str | None, as_json: bool, actor: str, comment: str | None) -> None:
    """Apply the document in PATH in one transaction (or show its diff with --dry-run)."""
    try:
        raw = parse(_read_file(path), _format_of(path, fmt))
        result = apply(Actor(actor, None, comment), raw, dry_run=dry_run)
    except DomainError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        _print_result(result)


def _import_command(name: str, source: str, translate):
    @click.command(name)
    @click.argument("path", type=click.Path(exists=True, dir_okay=False))
    @click.option("--environment", "-e", required=True, help=f"{source} environment to translate.")
    @click.option("--target", default=None, help="Pitcrew environment the document is for (default: the same key).")
    @click.option("--segments", "segments_path", type=click.Path(exists=True, dir_okay=False), default=None,
                  help=f"{source} segments export (see docs/flags-as-code.md).")
    @click.option("--format", "fmt", type=click.Choice(FORMATS), default="yaml", show_default=True)
    @click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
                  help="Write the document to this file instead of standard output.")
    @click.option("--report", "report_path", type=click.Path(dir_okay=False, writable=True), default=None,
                  help="Also write the translation report as JSON to this file.")
    @click.option("--strict", is_flag=True, help="Exit with status 2 when anything could not be translated.")
    def command(path, environment, target, segments_path, fmt, output, report_path, strict):
        try:
            source_data = parse(_read_file(path), "json")
            segments = parse(_read_file(segments_path), "json") if segments_path else None
            document, report = translate(source_data, environment, target=target, segments=segments)
        except DomainError as exc:
            _fail(exc)
        _write_text(dump(document, fmt), output)
        if report_path:
            with open(report_path, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(report.to_dict(), indent=2) + "\n")
        click.echo(report.text(), err=True)
        if strict and report.untranslated:
            sys.exit(2)

    command.help = (f"Translate a {source} export in PATH into a flags-as-code document; "
                    "print what could not be translated.")
    return command


def commands() -> list:
    return [export_command, apply_command,
            _import_command("import-launchdarkly", "LaunchDarkly", launchdarkly.translate),
            _import_command("import-unleash", "Unleash", unleash.translate)]
