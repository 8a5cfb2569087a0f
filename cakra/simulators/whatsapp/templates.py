"""Message templates: the approved set a send is checked against, and Meta's approval rules.

A template is a body with numbered parameters ``{{1}}``, ``{{2}}``...; a
send names it by name and language and passes one text per parameter, and
the citizen sees the body with the parameters filled in. The simulator loads
its approved set from a JSON file (a list of ``{"name", "language",
"category", "body"}``) and accepts new ones through the management API, which
approves a UTILITY template whose parameters are numbered 1..n and rejects
anything else.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATEGORIES = frozenset({"UTILITY", "MARKETING", "AUTHENTICATION"})
APPROVED = "APPROVED"
REJECTED = "REJECTED"
NAME_PATTERN = re.compile(r"[a-z0-9_]{1,512}")
LANGUAGE_PATTERN = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?")
BODY_MAX_CHARS = 1024
_PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")
# What Meta refuses inside a parameter's text (error 132018).
_BAD_PARAMETER = re.compile(r"[\n\t]| {5,}")


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    language: str
    category: str
    body: str
    status: str = APPROVED

    @property
    def id(self) -> str:
        """A stable numeric id, as Graph gives every object."""
        digest = hashlib.sha256(f"{self.name}\x00{self.language}".encode()).digest()
        return str(int.from_bytes(digest[:7], "big"))

    @property
    def parameter_count(self) -> int:
        return len(set(_PLACEHOLDER.findall(self.body)))

    def render(self, parameters: list[str]) -> str:
        """The body as the citizen sees it (``parameters`` already checked against the count)."""
        return _PLACEHOLDER.sub(lambda match: parameters[int(match.group(1)) - 1], self.body)

    def as_graph(self) -> dict[str, Any]:
        """As ``GET /{waba_id}/message_templates`` lists it."""
        return {
            "name": self.name,
            "language": self.language,
            "status": self.status,
            "category": self.category,
            "id": self.id,
            "components": [{"type": "BODY", "text": self.body}],
        }


def placeholders_well_formed(body: str) -> bool:
    """Parameters are numbered 1..n (each may repeat), with no stray braces."""
    numbers = {int(n) for n in _PLACEHOLDER.findall(body)}
    if numbers != set(range(1, len(numbers) + 1)):
        return False
    return "{{" not in _PLACEHOLDER.sub("", body) and "}}" not in _PLACEHOLDER.sub("", body)


def parameter_text_valid(text: str) -> bool:
    """No new-line or tab, and at most four spaces in a row (Meta's rule for parameters)."""
    return _BAD_PARAMETER.search(text) is None


def template_from_json(item: object) -> Template:
    """One template of the simulator's file; ValueError when it is malformed."""
    if not isinstance(item, dict) or set(item) != {"name", "language", "category", "body"}:
        raise ValueError('each template is an object with exactly "name", "language", "category" and "body"')
    name, language, category, body = item["name"], item["language"], item["category"], item["body"]
    if not all(isinstance(value, str) for value in (name, language, category, body)):
        raise ValueError("template fields are strings")
    if not NAME_PATTERN.fullmatch(name) or not LANGUAGE_PATTERN.fullmatch(language):
        raise ValueError(f"template {name!r}: bad name or language")
    if category.upper() not in CATEGORIES:
        raise ValueError(f"template {name!r}: category must be one of {sorted(CATEGORIES)}")
    if not body or len(body) > BODY_MAX_CHARS or not placeholders_well_formed(body):
        raise ValueError(f"template {name!r}: the body must have parameters numbered {{{{1}}}}..{{{{n}}}}")
    return Template(name=name, language=language, category=category.upper(), body=body)


def templates_load(path: Path) -> list[Template]:
    """The approved templates in ``path`` (JSON list); ValueError/OSError when it cannot be used."""
    items = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(items, list):
        raise ValueError(f"{path}: a JSON list of templates is expected")  # noqa: TRY004 - one error type for a bad file
    templates = [template_from_json(item) for item in items]
    keys = [(template.name, template.language) for template in templates]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: a template name and language appear twice")
    return templates


class TemplateBook:
    """The templates the simulator knows, approved or rejected; thread-safe."""

    def __init__(self, templates: list[Template]) -> None:
        self._lock = threading.Lock()
        self._templates = {(template.name, template.language): template for template in templates}

    def approved(self, name: str, language: str) -> Template | None:
        with self._lock:
            template = self._templates.get((name, language))
        return template if template is not None and template.status == APPROVED else None

    def all(self) -> list[Template]:
        with self._lock:
            return sorted(self._templates.values(), key=lambda template: (template.name, template.language))

    def submit(self, *, name: str, language: str, category: str, body: str) -> Template | None:
        """Review a new template: approved when UTILITY with well-formed parameters,
        otherwise kept as REJECTED; None when that name and language exist already."""
        approved = category == "UTILITY" and 0 < len(body) <= BODY_MAX_CHARS and placeholders_well_formed(body)
        template = Template(
            name=name, language=language, category=category, body=body, status=APPROVED if approved else REJECTED
        )
        with self._lock:
            if (name, language) in self._templates:
                return None
            self._templates[(name, language)] = template
        return template
