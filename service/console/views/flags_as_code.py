"""Flags as code (docs/flags-as-code.md): per environment, download its document
(YAML or JSON), and paste or upload a document to see its dry-run diff
(created / changed with the field-level diff / unchanged, warnings, or the
problems by document path), then apply it. The same functions as the API
(``service.flags_as_code``): parse with its limits, apply in one transaction.

An apply is allowed only for the document exactly as previewed: the form
carries the SHA-256 of the previewed text, and a document that differs (or
was never previewed) is previewed again instead of applied. In an environment
that requires approvals, the preview and the result list the change requests
that hold the targeting changes, with links to them."""

from __future__ import annotations

import hashlib
import json

from flask import Response, abort, flash, redirect, render_template, request, url_for

from ...domain.errors import ValidationFailed
from ...flags_as_code.apply import apply
from ...flags_as_code.document import MEDIA_TYPES, dump, parse
from ...flags_as_code.export import export_document
from .. import bp, nav, queries
from ..forms import attempt
from ..session import actor

nav.register("Export / import", "console.flags_as_code", order=65)

FORMATS = ("yaml", "json")


def _environments() -> list[str]:
    return [e.key for e in queries.environments()]


@bp.get("/export-import")
def flags_as_code():
    environments = _environments()
    if not environments:
        abort(404)
    return redirect(url_for("console.flags_as_code_env", env=environments[-1] if "production" not in environments
                            else "production"), 303)


def digest(text: str) -> str:
    """What the preview is of: the text without its surrounding blank lines (a textarea drops
    a leading newline when it is rendered again)."""
    return hashlib.sha256(text.strip().encode("utf-8", "surrogatepass")).hexdigest()


def _document_text() -> str:
    """The uploaded file when one was chosen, else the pasted text; line ends as LF (browsers
    send a textarea's lines with CRLF)."""
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        raw = upload.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationFailed("The file is not UTF-8 text.", {"file": [
                f"Not UTF-8 text ({exc.reason} at byte {exc.start})."]}) from None
    else:
        text = request.form.get("document", "")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _run(env: str, text: str, dry_run: bool) -> dict:
    if not text.strip():
        raise ValidationFailed("Paste a document or choose a file.", {"document": ["Empty."]})
    raw = parse(text)
    named = raw.get("environment") if isinstance(raw, dict) else None
    if isinstance(named, str) and named != env:
        raise ValidationFailed("The document is for another environment.", {"environment": [
            f"The document's environment is {named!r}, this page is {env!r}: open {named!r}'s page, or change "
            "the document's environment."]})
    return apply(actor(), raw, dry_run=dry_run)


@bp.route("/export-import/<env>", methods=["GET", "POST"])
def flags_as_code_env(env):
    environments = _environments()
    if env not in environments:
        abort(404)
    text, result, outcome, status, previewed = "", None, None, 200, None
    if request.method == "POST":
        outcome = attempt(_document_text)
        if outcome.ok:
            text = outcome.value
            wants_apply = request.form.get("action") == "apply"
            same = wants_apply and request.form.get("previewed") == digest(text)
            if wants_apply and not same:
                flash("The document differs from the one previewed (or was not previewed): here is its preview. "
                      "Nothing was applied.", "warning")
            outcome = attempt(_run, env, text, dry_run=not same)
            if outcome.ok:
                result = outcome.value
                previewed = digest(text) if result["dry_run"] else None
        status = outcome.status
    approvals = next(e.approvals_required for e in queries.environments() if e.key == env)
    return render_template("console/flags_as_code.html", title=f"Export / import: {env}", env=env,
                           environments=environments, formats=FORMATS, text=text, result=result, outcome=outcome,
                           previewed=previewed, dumps=_dumps, approvals=approvals), status


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)


@bp.get("/export-import/<env>/export.<fmt>")
def flags_as_code_export(env, fmt):
    if fmt not in FORMATS:
        abort(404)
    document = export_document(env)
    return Response(dump(document, fmt), mimetype=MEDIA_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="pitcrew-{env}.{fmt}"'})
