"""The extension's constants and mlorc._native's name tables against
include/mlorc.h, parsed here: a constant added to (or renumbered in) the
header and not mirrored in src/mlorc/_ext/module.c or _native.py fails."""
import os
import re

import pytest

from mlorc import _mlorc, _native

HEADER = os.path.join(os.environ.get("MLORC_INCLUDE_DIR")
                      or os.path.join(os.path.dirname(__file__), "..", "..", "..", "include"), "mlorc.h")


def header_constants():
    """{name without MLORC_: value} of every enum entry and numeric #define."""
    with open(HEADER, encoding="utf-8") as f:
        text = re.sub(r"/\*.*?\*/", " ", f.read(), flags=re.S)  # comments may hold "MLORC_X = 1"
    constants = {}
    for name, value in re.findall(r"\b(MLORC_[A-Z0-9_]+)\s*=\s*(\d+)\s*[,}\n]", text):
        constants[name[len("MLORC_"):]] = int(value)
    for name, value in re.findall(r"^\s*#define\s+(MLORC_[A-Z0-9_]+)\s+(0x[0-9a-fA-F]+|\d+)\s*$", text, flags=re.M):
        constants[name[len("MLORC_"):]] = int(value, 0)
    return constants


CONSTANTS = header_constants()


def of_kind(prefix):
    return {name[len(prefix):]: value for name, value in CONSTANTS.items() if name.startswith(prefix)}


def test_header_parse_found_every_kind():
    # Sanity bounds on the parser itself (not on the header's contents).
    assert CONSTANTS["OK"] == 0 and CONSTANTS["RULE_ADAMW"] == 1 and CONSTANTS["PARAM_BETA1"] == 1
    for prefix in ("ERROR_", "RULE_", "PARAM_", "STORAGE_", "DTYPE_"):
        assert of_kind(prefix), prefix
    assert "H" not in CONSTANTS  # the include guard has no value


@pytest.mark.parametrize("name", sorted(CONSTANTS))
def test_extension_has_every_header_constant(name):
    assert getattr(_mlorc, name, None) == CONSTANTS[name], f"_mlorc.{name} missing or differs from MLORC_{name}"


def test_extension_has_no_constant_the_header_lacks():
    kinds = ("OK", "ERROR_", "RULE_", "PARAM_", "STORAGE_", "DTYPE_")
    extra = [n for n in dir(_mlorc) if n.startswith(kinds) and isinstance(getattr(_mlorc, n), int)
             and n not in CONSTANTS]
    assert not extra


@pytest.mark.parametrize("table, prefix", [("RULES", "RULE_"), ("PARAMS", "PARAM_"),
                                           ("STORAGES", "STORAGE_"), ("STATUSES", "ERROR_")])
def test_native_tables_name_every_header_constant(table, prefix):
    """_native spells MLORC_PARAM_BETA1 as "beta1", MLORC_ERROR_LINALG as "linalg"..."""
    expected = {name.lower(): value for name, value in of_kind(prefix).items()}
    if table == "STATUSES":
        expected["ok"] = CONSTANTS["OK"]
    assert getattr(_native, table) == expected


def test_native_name_sets_are_consistent():
    assert _native.INTEGER_PARAMS <= set(_native.PARAMS)
    for names, table in ((_native.RULE_NAMES, _native.RULES), (_native.STORAGE_NAMES, _native.STORAGES),
                         (_native.STATUS_NAMES, _native.STATUSES)):
        assert names == {code: name for name, code in table.items()} and len(names) == len(table)
    assert _native.GROUP_STATE_BYTES == CONSTANTS["GROUP_STATE_BYTES"]
    for code, name in _native.STATUS_NAMES.items():  # the library agrees the codes exist
        assert _mlorc.status_string(code) != "unknown status", name
