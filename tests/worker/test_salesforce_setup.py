"""The Account custom fields, as an admin reads them and as the Metadata API deploys them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from connectors.salesforce.schema import build_schema
from worker.delivery.writeback import DEFAULT_FIELDS
from worker.ops.salesforce_fields import (
    ACCOUNT_FIELDS,
    METADATA_NAMESPACE,
    PERMISSION_SET,
    CustomField,
    account_object_xml,
    admin_instructions,
    package_xml,
    permission_set_xml,
    write_package,
)
from worker.sync.salesforce import SALESFORCE_STREAMS

NS = {"md": METADATA_NAMESPACE}
# README "Salesforce fields": name -> (Metadata API type, length, precision, scale)
DOCUMENTED = {
    "Health_Score__c": ("Number", None, "5", "2"),
    "Health_Band__c": ("Text", "40", None, None),
    "Health_Trend__c": ("Text", "40", None, None),
    "Health_Reason__c": ("LongTextArea", "32768", None, None),
    "Health_Updated__c": ("DateTime", None, None, None),
    "Churn_Risk__c": ("Number", None, "5", "2"),
    "Expansion_Readiness__c": ("Number", None, "5", "2"),
    "Health_Confidence__c": ("Text", "40", None, None),
    "Health_Override__c": ("Number", None, "5", "2"),
    "Health_Override_Reason__c": ("Text", "255", None, None),
    "Health_Override_Until__c": ("Date", None, None, None),
}


def _parse(text: str) -> ET.Element:
    return ET.fromstring(text.encode())  # noqa: S314 - our own output


def _object_fields() -> dict[str, ET.Element]:
    root = _parse(account_object_xml())
    return {entry.findtext("md:fullName", namespaces=NS) or "": entry for entry in root.findall("md:fields", NS)}


def test_the_definitions_cover_exactly_the_documented_fields() -> None:
    assert {f.name for f in ACCOUNT_FIELDS} == set(DOCUMENTED)


def test_the_written_fields_are_the_ones_the_writeback_writes() -> None:
    assert {f.name for f in ACCOUNT_FIELDS if f.written} == set(DEFAULT_FIELDS.values())


def test_the_override_fields_are_ones_the_sync_reads_from_account() -> None:
    account = next(s for s in SALESFORCE_STREAMS if s.sobject == "Account")

    assert {f.name for f in ACCOUNT_FIELDS if not f.written} <= set(account.optional)


def test_each_definition_matches_the_type_a_correctly_set_up_org_describes() -> None:
    account = build_schema(None).sobject("Account")
    assert account is not None

    for item in ACCOUNT_FIELDS:
        described = account.field(item.name)
        assert described is not None, item.name
        assert described.type == item.describe_type, item.name


def test_package_xml_lists_every_field_as_a_custom_field_and_the_permission_set() -> None:
    root = _parse(package_xml(api_version="61.0"))

    types = {t.findtext("md:name", namespaces=NS): [m.text or "" for m in t.findall("md:members", NS)]
             for t in root.findall("md:types", NS)}
    assert root.tag == f"{{{METADATA_NAMESPACE}}}Package"
    assert sorted(types["CustomField"]) == sorted(f"Account.{name}" for name in DOCUMENTED)
    assert types["PermissionSet"] == [PERMISSION_SET]
    assert root.findtext("md:version", namespaces=NS) == "61.0"


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_account_object_gives_each_field_its_type_and_size(name: str) -> None:
    kind, length, precision, scale = DOCUMENTED[name]

    entry = _object_fields()[name]

    assert entry.findtext("md:type", namespaces=NS) == kind
    assert entry.findtext("md:length", namespaces=NS) == length
    assert entry.findtext("md:precision", namespaces=NS) == precision
    assert entry.findtext("md:scale", namespaces=NS) == scale
    assert entry.findtext("md:label", namespaces=NS)
    assert entry.findtext("md:description", namespaces=NS)


def test_a_long_text_field_says_how_many_lines_it_shows() -> None:
    assert _object_fields()["Health_Reason__c"].findtext("md:visibleLines", namespaces=NS) == "3"


def test_the_permission_set_lets_the_worker_edit_only_what_it_writes() -> None:
    root = _parse(permission_set_xml())

    grants = {p.findtext("md:field", namespaces=NS): (p.findtext("md:readable", namespaces=NS),
                                                      p.findtext("md:editable", namespaces=NS))
              for p in root.findall("md:fieldPermissions", NS)}
    on_account = {field: grant for field, grant in grants.items() if str(field).startswith("Account.")}
    assert on_account == {f"Account.{f.name}": ("true", "true" if f.written else "false") for f in ACCOUNT_FIELDS}


def test_write_package_writes_a_deployable_folder(tmp_path: Path) -> None:
    written = write_package(tmp_path / "healthbeat-fields")

    folder = tmp_path / "healthbeat-fields"
    assert sorted(p.relative_to(folder).as_posix() for p in written) == [
        "objects/Account.object", "objects/Health_Snapshot__c.object", "package.xml",
        f"permissionsets/{PERMISSION_SET}.permissionset"]
    for path in written:
        assert path.read_text(encoding="utf-8").startswith('<?xml version="1.0" encoding="UTF-8"?>')
        _parse(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("item", ACCOUNT_FIELDS, ids=lambda f: f.name)
def test_the_admin_instructions_name_each_field_with_its_setup_type(item: CustomField) -> None:
    block = admin_instructions().split(f"(API name {item.name})", 1)

    assert len(block) == 2, f"{item.name} is not in the instructions"
    assert block[1].splitlines()[1].strip() == f"Type: {item.setup_type}"


def test_the_admin_instructions_give_the_setup_path_and_field_level_security() -> None:
    text = admin_instructions()

    assert "Object Manager → Account → Fields & Relationships" in text
    assert "Number, Length 3, Decimal Places 2" in text
    assert "field-level security" in text
