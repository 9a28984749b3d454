"""The custom fields Healthbeat needs on the Salesforce Account, and two ways to create them.

One list of definitions serves three readers, so they cannot drift apart: an admin clicking through
Setup (`admin_instructions`), a deployment through the Metadata API (`write_package`: `package.xml`,
`objects/Account.object`, `objects/Health_Snapshot__c.object` and a permission set that grants the integration
user access to each field), and `healthbeat doctor`, which compares the org's `describe` of Account with
`describe_type`.

Salesforce users build reports on these fields, and a field holds only its latest value. Two ways keep the
past: field history tracking on the score, band and churn risk (`trackHistory` on each field, and
`enableHistory` on Account, which the Metadata API requires before any Account field is tracked), so that each
change shows in the "Account History" report type with its old and new value and when it changed; and, with
`HEALTHBEAT_SALESFORCE_SNAPSHOTS=on`, a row a day per account in the custom object `Health_Snapshot__c`
(`worker.delivery.snapshots`), for trend reports and dashboards.

Names and types follow README "Salesforce fields". The written fields take their names from
`worker.delivery.writeback.DEFAULT_FIELDS`, so the write-back and this setup always speak of the same fields; the
override fields are read only (a CSM fills them in) and match what `worker.sync` reads from Account.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from worker.delivery.writeback import DEFAULT_FIELDS

__all__ = [
    "ACCOUNT_FIELDS",
    "DESCRIBE_TYPES",
    "METADATA_NAMESPACE",
    "PERMISSION_SET",
    "SNAPSHOT_FIELDS",
    "SNAPSHOT_OBJECT",
    "CustomField",
    "FieldKind",
    "account_object_xml",
    "admin_instructions",
    "package_xml",
    "permission_set_xml",
    "snapshot_object_xml",
    "write_package",
]

FieldKind = Literal["Number", "Text", "LongTextArea", "DateTime", "Date", "Lookup"]

DESCRIBE_TYPES: Final[dict[str, str]] = {
    "Number": "double", "Text": "string", "LongTextArea": "textarea", "DateTime": "datetime", "Date": "date",
    "Lookup": "reference",
}
"""Metadata API field type → the type `describe` reports for it."""

_SETUP_NAMES: Final[dict[str, str]] = {
    "Number": "Number", "Text": "Text", "LongTextArea": "Text Area (Long)", "DateTime": "Date/Time",
    "Date": "Date", "Lookup": "Lookup Relationship",
}
"""Metadata API field type → the name Setup's "New Custom Field" wizard shows."""

METADATA_NAMESPACE: Final = "http://soap.sforce.com/2006/04/metadata"
PERMISSION_SET: Final = "Healthbeat_Integration"


@dataclass(frozen=True)
class CustomField:
    """One custom field on Account, in the Metadata API's terms (`precision` counts all digits)."""

    name: str
    label: str
    kind: FieldKind
    description: str
    written: bool
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    visible_lines: int | None = None
    track_history: bool = False
    """Field history tracking: Salesforce keeps each change (old value, new value, when, who) for history reports."""
    external_id: bool = False
    unique: bool = False
    reference_to: str | None = None
    """For a Lookup: the object it points to."""

    @property
    def describe_type(self) -> str:
        """What `describe` must report for this field, e.g. ``double`` for a Number."""
        return DESCRIBE_TYPES[self.kind]

    @property
    def setup_type(self) -> str:
        """The type as an admin enters it in Setup: Setup asks for digits left of the point, not precision."""
        name = _SETUP_NAMES[self.kind]
        if self.kind == "Number" and self.precision is not None:
            scale = self.scale or 0
            return f"{name}, Length {self.precision - scale}, Decimal Places {scale}"
        if self.kind == "LongTextArea":
            return f"{name}, Length {self.length:,}, # Visible Lines {self.visible_lines}"
        if self.kind == "Text":
            return f"{name}, Length {self.length}" + (", Unique, External ID" if self.external_id else "")
        if self.kind == "Lookup":
            return f"{name} to {self.reference_to}"
        return name

    @property
    def short_type(self) -> str:
        """The README's notation: Number(5,2), Text(40), Long Text, DateTime, Date."""
        if self.kind == "Number":
            return f"Number({self.precision},{self.scale})"
        if self.kind == "Text":
            return f"Text({self.length})"
        if self.kind == "Lookup":
            return f"Lookup({self.reference_to})"
        return {"LongTextArea": "Long Text", "DateTime": "DateTime", "Date": "Date"}[self.kind]


def _score(key: str, label: str, description: str, *, track: bool = False) -> CustomField:
    return CustomField(DEFAULT_FIELDS[key], label, "Number", description, written=True, precision=5, scale=2,
                       track_history=track)


def _text(key: str, label: str, description: str, *, track: bool = False) -> CustomField:
    return CustomField(DEFAULT_FIELDS[key], label, "Text", description, written=True, length=40,
                       track_history=track)


ACCOUNT_FIELDS: Final[tuple[CustomField, ...]] = (
    _score("score", "Health Score", "Customer-health score from 0 to 100, written by Healthbeat each cycle "
           "(or the CSM override while one is in force).", track=True),
    _text("band", "Health Band", "red, yellow or green, from the scorecard's thresholds; written by Healthbeat.",
          track=True),
    _text("trend", "Health Trend", "Change of the score over the scorecard's trend window, with an arrow "
          "(↑ → ↓); written by Healthbeat."),
    CustomField(DEFAULT_FIELDS["reason"], "Health Reason", "LongTextArea",
                "The two or three measures that moved the score most, in plain words; written by Healthbeat.",
                written=True, length=32768, visible_lines=3),
    CustomField(DEFAULT_FIELDS["updated"], "Health Updated", "DateTime",
                "When Healthbeat computed the values in the health fields.", written=True),
    _score("churn_risk", "Churn Risk", "Churn risk from 0 to 100 (higher is riskier); written by Healthbeat.",
           track=True),
    _score("expansion_readiness", "Expansion Readiness",
           "Expansion readiness from 0 to 100 (higher is readier); written by Healthbeat."),
    _text("confidence", "Health Confidence", "How much data the score rests on (high, medium or low); "
          "written by Healthbeat."),
    CustomField("Health_Override__c", "Health Override", "Number",
                "A CSM's own health score (0 to 100); Healthbeat shows it instead of its own until the "
                "override expires. Read by Healthbeat, never written.", written=False, precision=5, scale=2),
    CustomField("Health_Override_Reason__c", "Health Override Reason", "Text",
                "Why the CSM overrode the score; shown with it. Read by Healthbeat, never written.",
                written=False, length=255),
    CustomField("Health_Override_Until__c", "Health Override Until", "Date",
                "The last day the override applies. Read by Healthbeat, never written.", written=False),
)

SNAPSHOT_OBJECT: Final = "Health_Snapshot__c"
SNAPSHOT_FIELDS: Final[tuple[CustomField, ...]] = (
    CustomField("Account__c", "Account", "Lookup", "The account this snapshot is of.", written=True,
                reference_to="Account"),
    CustomField("Date__c", "Date", "Date", "The day of the snapshot (UTC): one snapshot per account and day.",
                written=True),
    CustomField("Score__c", "Score", "Number", "The health score that day, 0 to 100.", written=True, precision=5,
                scale=2),
    CustomField("Band__c", "Band", "Text", "red, yellow, green or unknown that day.", written=True, length=40),
    CustomField("Churn_Risk__c", "Churn Risk", "Number", "Churn risk that day, 0 to 100.", written=True,
                precision=5, scale=2),
    CustomField("Expansion_Readiness__c", "Expansion Readiness", "Number", "Expansion readiness that day, 0 to 100.",
                written=True, precision=5, scale=2),
    CustomField("Confidence__c", "Confidence", "Text", "How much data the score rested on that day.", written=True,
                length=40),
    CustomField("Snapshot_Key__c", "Snapshot Key", "Text", "The account's Id and the day: the external id "
                "Healthbeat upserts on, so that a snapshot written twice is one row.", written=True, length=40,
                external_id=True, unique=True),
)
"""`Health_Snapshot__c`'s fields, as `worker.delivery.snapshots` writes them."""


# -- (a) plain instructions for an admin ------------------------------------------------------------------

def admin_instructions(fields: Sequence[CustomField] = ACCOUNT_FIELDS) -> str:
    """Step-by-step text for an admin who creates the fields by hand in Setup."""
    lines = [
        "Healthbeat's custom fields on Account",
        "",
        "In Salesforce Setup, open Object Manager → Account → Fields & Relationships and click New for each",
        "field below. Choose the data type shown, then enter the Field Label and the Field Name (Salesforce",
        "adds the __c), the length or decimal places, and the description.",
    ]
    for written, heading in ((True, "Written by Healthbeat (the integration user needs Read and Edit access):"),
                             (False, "Filled in by a CSM, read by Healthbeat (the integration user needs Read "
                                     "access; CSMs need Edit):")):
        chosen = [f for f in fields if f.written is written]
        if not chosen:
            continue
        lines += ["", heading]
        for number, item in enumerate(chosen, start=1):
            lines += [f"  {number}. {item.label} — Field Name {item.name.removesuffix('__c')} "
                      f"(API name {item.name})",
                      f"     Type: {item.setup_type}",
                      f"     Description: {item.description}"]
    lines += [
        "",
        "Field-level security: on the wizard's \"Establish field-level security\" step, make each field",
        "visible to the profile or permission set of Healthbeat's integration user (the Run As user of the",
        "External Client App, or SALESFORCE_USERNAME with the JWT bearer flow), and not read-only for the",
        "fields Healthbeat writes (a read-only one is left out of every write). A field that user cannot",
        "see does not appear in describe, and `healthbeat doctor` reports it as missing.",
        "Page layouts: add the fields to the Account page layouts your CSMs use.",
        "",
        "History: in Object Manager → Account → Fields & Relationships → Set History Tracking, tick Enable",
        "Account History, then " + ", ".join(f.label for f in fields if f.track_history) + ": each change then",
        "shows in the Account History related list and in reports of the Account History type.",
        "",
        f"Daily snapshots (only with HEALTHBEAT_SALESFORCE_SNAPSHOTS=on): a custom object {SNAPSHOT_OBJECT}",
        "(label Health Snapshot, record name an Auto Number, Allow Reports) with these fields:",
        *(f"  - {f.name}: {f.setup_type}" for f in SNAPSHOT_FIELDS),
        "The integration user needs Create, Read and Edit on the object and Edit on its fields.",
        "",
        f"Or deploy them in one go with the Metadata API package (package.xml, objects/Account.object, "
        f"objects/{SNAPSHOT_OBJECT}.object and the permission set {PERMISSION_SET}):",
        "  sf project deploy start --metadata-dir <folder> --target-org <org>",
        f"  sf org assign permset --name {PERMISSION_SET} --on-behalf-of <integration user> --target-org <org>",
    ]
    return "\n".join(lines) + "\n"


# -- (b) a Metadata API package ---------------------------------------------------------------------------

def _element(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, tag).text = text


def _document(root: ET.Element) -> str:
    ET.indent(root, space="    ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _custom_field(parent: ET.Element, item: CustomField) -> None:
    """One `<fields>` entry, elements in the order Salesforce itself retrieves them (fullName, then a-z)."""
    entry = ET.SubElement(parent, "fields")
    _element(entry, "fullName", item.name)
    if item.unique:
        _element(entry, "caseSensitive", "false")
    if item.kind == "Lookup":
        _element(entry, "deleteConstraint", "SetNull")  # a snapshot outlives its account, as history does
    _element(entry, "description", item.description)
    if item.kind not in ("LongTextArea", "Lookup"):
        _element(entry, "externalId", "true" if item.external_id else "false")
    _element(entry, "label", item.label)
    if item.length is not None:
        _element(entry, "length", str(item.length))
    if item.precision is not None:
        _element(entry, "precision", str(item.precision))
    if item.reference_to is not None:
        _element(entry, "referenceTo", item.reference_to)
        _element(entry, "relationshipLabel", "Health Snapshots")
        _element(entry, "relationshipName", "Health_Snapshots")
    if item.kind != "LongTextArea":
        _element(entry, "required", "false")
    if item.scale is not None:
        _element(entry, "scale", str(item.scale))
    _element(entry, "trackHistory", "true" if item.track_history else "false")
    _element(entry, "type", item.kind)
    if item.kind == "Text":
        _element(entry, "unique", "true" if item.unique else "false")
    if item.visible_lines is not None:
        _element(entry, "visibleLines", str(item.visible_lines))


def account_object_xml(fields: Sequence[CustomField] = ACCOUNT_FIELDS) -> str:
    """`objects/Account.object`: the standard object with only our custom fields in it, and history tracking
    on (`enableHistory`), without which the fields' `trackHistory` is refused."""
    root = ET.Element("CustomObject", {"xmlns": METADATA_NAMESPACE})
    _element(root, "enableHistory", "true" if any(f.track_history for f in fields) else "false")
    for item in fields:
        _custom_field(root, item)
    return _document(root)


def snapshot_object_xml(fields: Sequence[CustomField] = SNAPSHOT_FIELDS) -> str:
    """`objects/Health_Snapshot__c.object`: the custom object of daily snapshots, reportable, named by an Auto
    Number (a snapshot has no name of its own), its records readable by whoever may read their account."""
    root = ET.Element("CustomObject", {"xmlns": METADATA_NAMESPACE})
    _element(root, "deploymentStatus", "Deployed")
    _element(root, "description", "One row per account and day with the health Healthbeat computed, for "
                                  "reports and dashboards over time; written by Healthbeat when "
                                  "HEALTHBEAT_SALESFORCE_SNAPSHOTS is on.")
    _element(root, "enableActivities", "false")
    _element(root, "enableHistory", "false")
    _element(root, "enableReports", "true")
    for item in fields:
        _custom_field(root, item)
    _element(root, "label", "Health Snapshot")
    name = ET.SubElement(root, "nameField")
    _element(name, "displayFormat", "HS-{000000}")
    _element(name, "label", "Snapshot Number")
    _element(name, "type", "AutoNumber")
    _element(root, "pluralLabel", "Health Snapshots")
    _element(root, "sharingModel", "ReadWrite")
    return _document(root)


def permission_set_xml(fields: Sequence[CustomField] = ACCOUNT_FIELDS,
                       snapshot_fields: Sequence[CustomField] = SNAPSHOT_FIELDS) -> str:
    """A permission set giving the integration user Edit on the written fields and Read on the others, and
    Create, Read and Edit on `Health_Snapshot__c` and its fields."""
    root = ET.Element("PermissionSet", {"xmlns": METADATA_NAMESPACE})
    _element(root, "description", "Lets Healthbeat's integration user write the health fields on Account "
                                  "and read the CSM override fields. Assign it to the integration user: the "
                                  "External Client App's Run As user, or SALESFORCE_USERNAME with the JWT "
                                  "bearer flow.")
    granted = [(f"Account.{f.name}", f.written) for f in fields]
    granted += [(f"{SNAPSHOT_OBJECT}.{f.name}", True) for f in snapshot_fields]
    for name, editable in sorted(granted):
        permission = ET.SubElement(root, "fieldPermissions")
        _element(permission, "editable", "true" if editable else "false")
        _element(permission, "field", name)
        _element(permission, "readable", "true")
    _element(root, "hasActivationRequired", "false")
    _element(root, "label", "Healthbeat Integration")
    if snapshot_fields:
        objects = ET.SubElement(root, "objectPermissions")
        for flag, value in (("allowCreate", "true"), ("allowDelete", "false"), ("allowEdit", "true"),
                            ("allowRead", "true"), ("modifyAllRecords", "false")):
            _element(objects, flag, value)
        _element(objects, "object", SNAPSHOT_OBJECT)
        _element(objects, "viewAllRecords", "false")
    return _document(root)


def package_xml(fields: Sequence[CustomField] = ACCOUNT_FIELDS, api_version: str = "59.0") -> str:
    """The manifest: every field as `Account.Name__c` of type CustomField, and the permission set."""
    root = ET.Element("Package", {"xmlns": METADATA_NAMESPACE})
    types = ET.SubElement(root, "types")
    for item in sorted(fields, key=lambda f: f.name):
        _element(types, "members", f"Account.{item.name}")
    _element(types, "name", "CustomField")
    types = ET.SubElement(root, "types")
    _element(types, "members", "Account")  # for its enableHistory; its fields are the CustomFields above
    _element(types, "members", SNAPSHOT_OBJECT)  # with its fields
    _element(types, "name", "CustomObject")
    types = ET.SubElement(root, "types")
    _element(types, "members", PERMISSION_SET)
    _element(types, "name", "PermissionSet")
    _element(root, "version", api_version)
    return _document(root)


def write_package(directory: Path, fields: Sequence[CustomField] = ACCOUNT_FIELDS,
                  api_version: str = "59.0") -> list[Path]:
    """Write the package into `directory` (created if needed) for `sf project deploy start --metadata-dir`.

    Returns the files written. Existing files of the same names are replaced; nothing else is touched.
    """
    files = {
        directory / "package.xml": package_xml(fields, api_version),
        directory / "objects" / "Account.object": account_object_xml(fields),
        directory / "objects" / f"{SNAPSHOT_OBJECT}.object": snapshot_object_xml(),
        directory / "permissionsets" / f"{PERMISSION_SET}.permissionset": permission_set_xml(fields),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)
