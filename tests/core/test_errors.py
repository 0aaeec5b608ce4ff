"""One exception tree in one module: every error idcode raises on purpose is defined in
idcode/errors.py, under IdcodeError, and no concept subclasses an unrelated one."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import idcode.errors as errors

ROOT = Path(__file__).resolve().parents[2]
#: Not an error raised to callers: the HTTP API's answer, turned into a problem document.
NOT_ERRORS = {("idcode/service/api/problems.py", "Problem")}


def test_no_exception_class_is_defined_outside_errors_py() -> None:
    outside = []
    for path in sorted([*(ROOT / "idcode").rglob("*.py"), *(ROOT / "adapters").glob("*.py")]):
        relative = path.relative_to(ROOT).as_posix()
        if relative == "idcode/errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or (relative, node.name) in NOT_ERRORS:
                continue
            # A private class (``_Refused``) is a signal inside its module, never raised out.
            if not node.name.startswith("_"):
                bases = {ast.unparse(base) for base in node.bases}
                if any(base.endswith(("Error", "Exception", "Exists")) for base in bases):
                    outside.append(f"{relative}: {node.name}")
    assert outside == []


def test_every_error_is_an_idcode_error() -> None:
    classes = [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]
    assert len(classes) > 20
    assert all(issubclass(cls, errors.IdcodeError) for cls in classes)


def test_unrelated_concepts_do_not_subclass_each_other() -> None:
    assert not issubclass(errors.TerminalAuthError, errors.CardError)
    assert not issubclass(errors.RequestRefused, errors.CardError)
    assert issubclass(errors.CborError, errors.FormatError)
    assert issubclass(errors.ServiceUnreachable, errors.UnavailableError)
    assert issubclass(errors.DatabaseUnavailable, errors.UnavailableError)
    assert issubclass(errors.BadResponse, errors.ServiceError)


def test_modules_keep_exporting_their_errors_under_their_own_names() -> None:
    from idcode.bundle import BundleError
    from idcode.cbor import CborError
    from idcode.scenes import SceneError
    from idcode.statuslist import StatusListError
    from idcode.terminal.client import BadResponse, ServiceError, ServiceUnreachable

    assert BundleError is errors.BundleError and CborError is errors.CborError
    assert SceneError is errors.SceneError and StatusListError is errors.StatusListError
    assert ServiceError is errors.ServiceError and BadResponse is errors.BadResponse
    assert ServiceUnreachable is errors.ServiceUnreachable
