"""Text from run folders made safe for Markdown: md_text. A run's name or group, or a message that
quotes a value from a run folder, goes through it wherever a page renders Markdown."""
from __future__ import annotations

import re

_MD_CUT = ":small[]"  # an empty <span>: nothing to see, but the text on either side is two text nodes
_MD_SPECIAL = re.compile(r"[\\`*\[\]<>$~|{}!#+=&@^]"      # always escaped
                         r"|(?<![^\W_])[-_]|[-_](?![^\W_])"  # - and _, except between two letters or digits
                         r"|:(?!\s)")                        # a colon, except before a space
_MD_LIST_NUMBER = re.compile(r"(^|[\r\n])([ \t]*\d+)([.)])")  # "1." or "1)" opening a line: a list
_MD_CUTS = re.compile(r"(?i:(?<=www)(?=\.))|(?<=[-<>~=])(?=\\[-<>~=])")


def _md_escape(match: re.Match) -> str:
    char = match.group()
    if char == ":":
        return "\\:" + _MD_CUT
    return (_MD_CUT if char == "@" else "") + "\\" + char


def md_text(text: object) -> str:
    """`text` (a run's name or group, a message that quotes values from a run folder) made safe
    to put in a string Streamlit renders as Markdown (st.markdown, captions, alerts, toasts, the
    labels of tabs, expanders, widgets and metrics, radio options): it shows exactly as typed,
    as no link, emphasis, code, heading, list, table, HTML, colour directive (`:red[...]`), icon
    (`:material/...:`), emoji (`:smile:`), LaTeX (`$x$`) or typographic arrow (`->`).

    A backslash goes before each ASCII punctuation character that can mean something in
    CommonMark, GFM or Streamlit (CommonMark shows `\\X` as X): always before \\ ` * [ ] < > $ ~ |
    { } ! # + = & @ ^; before - and _ unless both neighbours are letters or digits (`t10k-labels`,
    `member_archs`: no emphasis, list or arrow can start there); before a colon unless a space
    follows; before the . or ) of a number that opens a line. ' " , ; ? % / ( and a lone . stay
    as they are, so messages read the same in the page's source.

    Streamlit 1.67's frontend also changes the text after the Markdown is parsed, where the
    backslashes are gone: in each text node, web and e-mail addresses become links (GFM
    autolink literals: `https://...`, `www....`, `a@b.c`), `:material_x:` and `:streamlit:`
    icons, `:smile:` an emoji, `->`, `--` and `>=` arrows and dashes. Those patterns are cut
    apart with an empty `:small[]` directive (an empty span): after each escaped colon, before
    each @, before the dot after "www" and between two of - < > ~ =.
    tests/e2e/test_names_browser.py checks all this in Chromium.

    The result is for Markdown only (a table, a chart or st.text shows text as it is) and must
    not follow a colon directly (the colon could join it into a shortcode, or be the one before
    a `:small[]`, which is then no directive)."""
    escaped = _MD_SPECIAL.sub(_md_escape, str(text))
    escaped = _MD_LIST_NUMBER.sub(r"\1\2\\\3", escaped)
    return _MD_CUTS.sub(_MD_CUT, escaped)
