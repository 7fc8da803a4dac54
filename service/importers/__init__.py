"""Translators from other products' flag exports into the flags-as-code document."""
