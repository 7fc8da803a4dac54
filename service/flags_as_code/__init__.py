"""Flags as code: an environment's flags, segments and metrics as one document.

* :mod:`.document` reads (JSON or YAML, with limits against hostile input)
  and writes (deterministic JSON or YAML) the ``version: 1`` document;
* :mod:`.export` builds the document from the database;
* :mod:`.apply` compares a document with the database (the diff) and writes
  it in one transaction through the domain functions.

Nothing here knows HTTP: ``service.api.flags_as_code`` and
``service.flags_as_code.cli`` are the thin callers. The format is described
in docs/flags-as-code.md.
"""
