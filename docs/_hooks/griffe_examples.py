"""Griffe extension: read a Google-style `Example:` section as `Examples:`.

Griffe knows the plural only; under the singular it renders the section as an
admonition whose `>>>` lines become nested block quotes. With this extension
both spellings render as code.
"""

from __future__ import annotations

import re

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", re.M)


class ExampleSection(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
