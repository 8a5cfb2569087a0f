"""Officers read Bahasa Indonesia: every back-office string has a translation.

Checked on the .po source (the compiled .mo is a build product), so these
tests hold whether or not ``compilemessages`` has run.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import cakra.backoffice

APP = Path(cakra.backoffice.__file__).parent
PO_FILE = APP / "locale" / "id" / "LC_MESSAGES" / "django.po"
TRANSLATE_TAG = re.compile(r"""{%\s*translate\s+(["'])(.+?)\1""")
BLOCK_TAG = re.compile(r"{%\s*blocktranslate(?:\s+with\s+(.*?))?\s*%}(.*?){%\s*endblocktranslate\s*%}", re.DOTALL)
GETTEXT_NAMES = {"_", "gettext", "gettext_lazy"}


def po_entries() -> dict[str, str]:
    entries: dict[str, str] = {}
    msgid: str | None = None
    field = ""
    for raw in PO_FILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        assert not line.startswith("#, fuzzy"), "fuzzy entries are not used by gettext"
        if line.startswith("msgid "):
            msgid, field = ast.literal_eval(line[6:]), "msgid"
        elif line.startswith("msgstr "):
            assert msgid is not None
            entries[msgid], field = ast.literal_eval(line[7:]), "msgstr"
        elif line.startswith('"') and msgid is not None:
            if field == "msgid":
                msgid += ast.literal_eval(line)
            else:
                entries[msgid] += ast.literal_eval(line)
    entries.pop("", None)
    return entries


def template_strings() -> set[str]:
    found: set[str] = set()
    for template in (APP / "templates").rglob("*.html"):
        text = template.read_text(encoding="utf-8")
        found.update(match.group(2) for match in TRANSLATE_TAG.finditer(text))
        for match in BLOCK_TAG.finditer(text):
            body = re.sub(r"{{\s*(\w+)\s*}}", r"%(\1)s", match.group(2))
            found.add(body)
    return found


def python_strings() -> set[str]:
    found: set[str] = set()
    for source in APP.rglob("*.py"):
        if "migrations" in source.parts:
            continue
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in GETTEXT_NAMES
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    return found


def test_every_catalogue_entry_is_translated():
    entries = po_entries()
    assert len(entries) > 100
    untranslated = [msgid for msgid, msgstr in entries.items() if not msgstr.strip()]
    assert untranslated == []


def test_every_marked_string_is_in_the_catalogue():
    marked = template_strings() | python_strings()
    assert "Photo being processed" in marked
    missing = sorted(marked - set(po_entries()))
    assert missing == [], "run makemessages -l id in cakra/backoffice and translate"


def test_placeholders_survive_translation():
    for msgid, msgstr in po_entries().items():
        assert sorted(re.findall(r"%\(\w+\)s", msgid)) == sorted(re.findall(r"%\(\w+\)s", msgstr)), msgid


def test_the_processing_placeholder_reads_as_required():
    assert po_entries()["Photo being processed"] == "Foto sedang diproses"
