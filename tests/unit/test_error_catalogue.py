"""gateway/error_catalogue.py: docs/errors.md's list of errors is generated from errors.py, and complete."""

from __future__ import annotations

import re
from pathlib import Path

from gateway import errors
from gateway.error_catalogue import BEGIN, END, error_rows, render_error_table

ROOT = Path(__file__).resolve().parents[2]


def documented_codes() -> set[str]:
    return {code for row in error_rows() for code in row.codes}


def test_the_errors_doc_holds_the_generated_table() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text()
    start, end = doc.index(BEGIN), doc.index(END) + len(END) + 1
    assert doc[start:end] == render_error_table(), "run: python -m gateway.error_catalogue"


def test_the_readme_links_to_the_errors_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/errors.md)" in readme
    assert BEGIN not in readme, "the table lives in docs/errors.md only"


def test_every_code_the_gateway_raises_is_documented() -> None:
    # A `code="..."` given where an error is raised must be one of its class's declared codes.
    raised: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        if path.name == "errors.py":  # the declarations themselves
            continue
        raised.update(re.findall(r'\bcode="([a-z_]+)"', path.read_text()))
    assert raised, "the scan found no codes at all"
    assert raised <= documented_codes(), raised - documented_codes()


def test_every_error_class_is_listed_with_its_status_and_v1_form() -> None:
    rows = {row.codes[0]: row for row in error_rows()}
    assert rows["model_not_served"].status == 409
    assert rows["model_not_served"].openai == "404 `model_not_found`"
    assert rows["request_timeout"].status == 408  # one of Sanic's, rendered in the same envelope
    for name in errors.__all__:
        error = getattr(errors, name)
        if isinstance(error, type) and issubclass(error, errors.GatewayError):
            assert error.code in rows, name
