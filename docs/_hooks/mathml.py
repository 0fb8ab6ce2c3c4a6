"""MkDocs hook: render the math of every page to MathML at build time.

`pymdownx.arithmatex` (generic mode) leaves TeX in
`<span class="arithmatex">\\(...\\)</span>` and `<div class="arithmatex">\\[...\\]</div>`
for a JavaScript renderer to typeset in the browser. The site must build and read
offline, with no script fetched from elsewhere, so this hook converts that TeX to
MathML (`latex2mathml`, pure Python) which browsers render natively. A formula
that cannot be converted fails the build, naming the page.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert
from mkdocs.exceptions import PluginError

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


def _render(tex: str, display: str, where: str) -> str:
    tex = html.unescape(tex).strip()
    try:
        mathml = convert(tex, display=display)
    except Exception as err:  # noqa: BLE001 - any converter failure is a build error
        raise PluginError(f"{where}: cannot render ${tex}$ to MathML: {err}") from err
    # keep the source for copy/paste and for screen readers that prefer TeX
    mathml = mathml.replace("<math ", f'<math alttext="{html.escape(tex)}" ', 1)
    tag = "div" if display == "block" else "span"
    return f'<{tag} class="arithmatex">{mathml}</{tag}>'


def on_page_content(html_text: str, page, **kwargs) -> str:
    where = page.file.src_uri
    html_text = _BLOCK.sub(lambda m: _render(m.group(1), "block", where), html_text)
    html_text = _INLINE.sub(lambda m: _render(m.group(1), "inline", where), html_text)
    if "$$" in re.sub(r"<(code|pre)\b.*?</\1>", "", html_text, flags=re.S):
        raise PluginError(f"{where}: unbalanced $$ display math left in the page")
    return html_text
