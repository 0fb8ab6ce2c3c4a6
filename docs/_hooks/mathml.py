"""MkDocs hook: render the math of every page to MathML at build time.

`pymdownx.arithmatex` (generic mode) leaves TeX in
`<span class="arithmatex">\\(...\\)</span>` and `<div
class="arithmatex">\\[...\\]</div>`
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

# Chromium renders MathML Core, which ignores `mathvariant` other than "normal":
# write double-struck (\\mathbb) and script (\\mathcal) capitals as their
# Unicode characters instead.
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTERS = {
    "double-struck": {
        **{c: chr(0x1D538 + i) for i, c in enumerate(_UPPER)},
        **dict(
            C="\u2102",
            H="\u210d",
            N="\u2115",
            P="\u2119",
            Q="\u211a",
            R="\u211d",
            Z="\u2124",
        ),
    },
    "script": {
        **{c: chr(0x1D49C + i) for i, c in enumerate(_UPPER)},
        **dict(
            B="\u212c",
            E="\u2130",
            F="\u2131",
            H="\u210b",
            I="\u2110",
            L="\u2112",
            M="\u2133",
            R="\u211b",
        ),
    },
}
_VARIANT = re.compile(r'<mi mathvariant="(double-struck|script)">([A-Z])</mi>')
_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


def _render(tex: str, display: str, where: str) -> str:
    tex = html.unescape(tex).strip()
    try:
        mathml = convert(tex, display=display)
    except Exception as err:  # noqa: BLE001 - any converter failure is a build error
        raise PluginError(f"{where}: cannot render ${tex}$ to MathML: {err}") from err
    mathml = _VARIANT.sub(
        lambda m: f"<mi>{_LETTERS[m.group(1)][m.group(2)]}</mi>", mathml
    )
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
