"""The sObjects the sandbox serves, their fields and Salesforce types, and value rules.

One description of the org serves three purposes: ``describe`` responses, validation of
writes (through the REST API and through the sandbox's Python data API) and type checks in
the SOQL evaluator. Keeping them in one place means the sandbox cannot describe a field that
queries then reject, or accept a write that describe calls read-only.

Values are kept the way Salesforce's JSON carries them: strings, floats for ``double`` and
``currency`` (so ``71`` comes back as ``71.0``, as it does from Salesforce), ints, bools,
``None``; datetimes as ``2024-01-01T00:00:00.000+0000`` strings and dates as ``YYYY-MM-DD``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final, Literal

from connectors.salesforce.ids import to_18

__all__ = [
    "SNAPSHOT_KEY",
    "SNAPSHOT_OBJECT",
    "SUPPORTED_TYPES",
    "FieldSpec",
    "FieldType",
    "FieldValueError",
    "SObjectSpec",
    "Schema",
    "build_schema",
    "format_datetime",
    "normalize_value",
    "parse_date",
    "parse_datetime",
]

FieldType = Literal[
    "id",
    "string",
    "textarea",
    "double",
    "currency",
    "int",
    "boolean",
    "datetime",
    "date",
    "picklist",
    "reference",
    "email",
    "url",
]
SUPPORTED_TYPES: Final = frozenset(FieldType.__args__)  # type: ignore[attr-defined]
TEXT_TYPES: Final = frozenset({"id", "string", "textarea", "picklist", "reference", "email", "url"})
NUMBER_TYPES: Final = frozenset({"double", "currency", "int"})
WHOLE_OBJECT: Final = "*"
"""In ``missing_fields``, this name removes the whole sObject from the org."""


class FieldValueError(ValueError):
    """A value Salesforce would refuse for a field, with the status code it would use.

    ``JSON_PARSER_ERROR`` means the value has the wrong JSON type or format (Salesforce rejects
    the whole request); other codes are per-record errors (``STRING_TOO_LONG``...).
    """

    def __init__(self, code: str, message: str, field_name: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field_name = field_name


@dataclass(frozen=True)
class FieldSpec:
    """One field as ``describe`` reports it."""

    name: str
    type: FieldType
    length: int = 0
    precision: int = 0
    scale: int = 0
    updateable: bool = True
    nillable: bool = True
    reference_to: tuple[str, ...] = ()
    picklist_values: tuple[str, ...] = ()
    restricted_picklist: bool = False
    default: Any = None
    external_id: bool = False
    """An External ID field: upserts match records on it (a custom text, number or email field)."""
    unique: bool = False

    @property
    def custom(self) -> bool:
        return self.name.endswith("__c")

    @property
    def label(self) -> str:
        base = self.name.removesuffix("__c").replace("_", " ")
        words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base).split()
        if words and words[-1] == "Id":
            words[-1] = "ID"
        return " ".join(words)

    def describe(self) -> dict[str, Any]:
        """The field's entry in a ``describe`` response (the attributes clients read)."""
        is_text = self.type in TEXT_TYPES
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "length": self.length if is_text else 0,
            "precision": self.precision,
            "scale": self.scale,
            "digits": self.precision if self.type == "int" else 0,
            "updateable": self.updateable,
            "createable": self.updateable,
            "nillable": self.nillable,
            "custom": self.custom,
            "filterable": not (self.type == "textarea" and self.length > 255),
            "sortable": not (self.type == "textarea" and self.length > 255),
            "referenceTo": list(self.reference_to),
            "relationshipName": self.name[:-2] if self.type == "reference" and self.name.endswith("Id") else None,
            "picklistValues": [
                {"value": v, "label": v, "active": True, "defaultValue": False} for v in self.picklist_values
            ],
            "restrictedPicklist": self.restricted_picklist,
            "soapType": _SOAP_TYPES[self.type],
            "externalId": self.external_id,
            "unique": self.unique,
        }


_SOAP_TYPES: Final[Mapping[str, str]] = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "string": "xsd:string",
    "textarea": "xsd:string",
    "picklist": "xsd:string",
    "email": "xsd:string",
    "url": "xsd:string",
    "double": "xsd:double",
    "currency": "xsd:double",
    "int": "xsd:int",
    "boolean": "xsd:boolean",
    "datetime": "xsd:dateTime",
    "date": "xsd:date",
}


@dataclass(frozen=True)
class SObjectSpec:
    """One sObject: its name, id key prefix and fields in describe order."""

    name: str
    key_prefix: str
    fields: Mapping[str, FieldSpec]
    label: str = ""
    _by_lower: Mapping[str, FieldSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_lower", {n.lower(): f for n, f in self.fields.items()})

    def field(self, name: str) -> FieldSpec | None:
        """The field called ``name`` (case-insensitive, as in Salesforce), or None."""
        return self._by_lower.get(name.lower())

    @property
    def has_is_deleted(self) -> bool:
        return "IsDeleted" in self.fields

    def describe(self) -> dict[str, Any]:
        """The body of ``GET sobjects/{name}/describe``."""
        return {**self.summary(), "fields": [f.describe() for f in self.fields.values()]}

    def summary(self) -> dict[str, Any]:
        """The object's entry in the global describe (``GET sobjects``)."""
        base = "/services/data/v{version}/sobjects/" + self.name
        return {
            "name": self.name,
            "label": self.label or self.name,
            "labelPlural": (self.label or self.name) + "s",
            "keyPrefix": self.key_prefix,
            "custom": self.name.endswith("__c"),
            "queryable": True,
            "retrieveable": True,
            "searchable": True,
            "createable": True,
            "updateable": True,
            "deletable": self.has_is_deleted,
            "urls": {"sobject": base, "describe": base + "/describe", "rowTemplate": base + "/{ID}"},
        }


class Schema:
    """The org's sObjects, looked up case-insensitively by name or by id key prefix."""

    def __init__(self, sobjects: Iterable[SObjectSpec]) -> None:
        self._objects = {o.name: o for o in sobjects}
        self._by_lower = {name.lower(): o for name, o in self._objects.items()}
        self._by_prefix = {o.key_prefix: o for o in self._objects.values()}

    def sobject(self, name: str) -> SObjectSpec | None:
        return self._by_lower.get(name.lower())

    def by_prefix(self, key_prefix: str) -> SObjectSpec | None:
        return self._by_prefix.get(key_prefix)

    def __iter__(self) -> Iterator[SObjectSpec]:
        return iter(self._objects.values())

    def names(self) -> list[str]:
        return list(self._objects)


# --- the org -------------------------------------------------------------------------------


def _f(name: str, type_: FieldType, **kwargs: Any) -> FieldSpec:
    return FieldSpec(name=name, type=type_, **kwargs)


def _system_fields(*, deletable: bool = True) -> list[FieldSpec]:
    fields = [
        _f("CreatedDate", "datetime", updateable=False, nillable=False),
        _f("LastModifiedDate", "datetime", updateable=False, nillable=False),
        _f("SystemModstamp", "datetime", updateable=False, nillable=False),
    ]
    if deletable:
        fields.insert(0, _f("IsDeleted", "boolean", updateable=False, nillable=False, default=False))
    return fields


def _id() -> FieldSpec:
    return _f("Id", "id", length=18, updateable=False, nillable=False)


def _ref(name: str, *targets: str, updateable: bool = True) -> FieldSpec:
    return _f(name, "reference", length=18, reference_to=targets, updateable=updateable)


def _text(name: str, length: int, **kwargs: Any) -> FieldSpec:
    return _f(name, "string", length=length, **kwargs)


def _long_text(name: str, length: int) -> FieldSpec:
    return _f(name, "textarea", length=length)


def _picklist(name: str, *values: str, restricted: bool = False, **kwargs: Any) -> FieldSpec:
    return _f(name, "picklist", length=255, picklist_values=values, restricted_picklist=restricted, **kwargs)


def _number(name: str, precision: int = 18, scale: int = 2, type_: FieldType = "double") -> FieldSpec:
    return _f(name, type_, precision=precision, scale=scale)


def _flag(name: str, *, default: bool = False, updateable: bool = True) -> FieldSpec:
    return _f(name, "boolean", nillable=False, default=default, updateable=updateable)


def _object(name: str, key_prefix: str, fields: list[FieldSpec]) -> SObjectSpec:
    return SObjectSpec(name=name, key_prefix=key_prefix, fields={f.name: f for f in fields}, label=name)


_WHO = ("Contact", "Lead")
_WHAT = ("Account", "Opportunity", "Case")


def _standard_objects() -> list[SObjectSpec]:
    account = _object(
        "Account",
        "001",
        [
            _id(),
            _text("Name", 255, nillable=False),
            _picklist(
                "Type",
                "Prospect",
                "Customer - Direct",
                "Customer - Channel",
                "Channel Partner / Reseller",
                "Installation Partner",
                "Technology Partner",
                "Other",
            ),
            _picklist(
                "Industry",
                "Agriculture",
                "Banking",
                "Biotechnology",
                "Communications",
                "Education",
                "Energy",
                "Finance",
                "Healthcare",
                "Manufacturing",
                "Media",
                "Retail",
                "Technology",
                "Other",
            ),
            _f("Website", "url", length=255),
            _ref("OwnerId", "User"),
            _number("AnnualRevenue", 18, 0, "currency"),
            _f("NumberOfEmployees", "int", precision=8),
            _ref("MasterRecordId", "Account", updateable=False),
            *_system_fields(),
            _number("Health_Score__c", 5, 2),
            _text("Health_Band__c", 40),
            _text("Health_Trend__c", 40),
            _long_text("Health_Reason__c", 32768),
            _f("Health_Updated__c", "datetime"),
            _number("Churn_Risk__c", 5, 2),
            _number("Expansion_Readiness__c", 5, 2),
            _text("Health_Confidence__c", 40),
            _number("Health_Override__c", 5, 2),
            _text("Health_Override_Reason__c", 255),
            _f("Health_Override_Until__c", "date"),
            _number("Contracted_Seats__c", 18, 0),
        ],
    )
    user = _object(
        "User",
        "005",
        [
            _id(),
            _text("Name", 121, updateable=False),
            _f("Email", "email", length=128, nillable=False),
            _flag("IsActive", default=True),
            _picklist(
                "TimeZoneSidKey",
                "America/Los_Angeles",
                "America/New_York",
                "Europe/London",
                "Europe/Paris",
                "Asia/Tokyo",
                "Australia/Sydney",
                "GMT",
                restricted=True,
                nillable=False,
                default="GMT",
            ),
            *_system_fields(deletable=False),
        ],
    )
    event = _object(
        "Event",
        "00U",
        [
            _id(),
            _ref("AccountId", "Account", updateable=False),
            _ref("WhatId", *_WHAT),
            _ref("WhoId", *_WHO),
            _ref("OwnerId", "User"),
            _text("Subject", 255),
            _long_text("Description", 32000),
            _f("StartDateTime", "datetime"),
            _f("EndDateTime", "datetime"),
            _f("ActivityDateTime", "datetime"),
            _f("DurationInMinutes", "int", precision=8),
            _flag("IsChild", updateable=False),  # an invitee's copy of the meeting (its owner is the invitee)
            _flag("IsRecurrence"),  # the master of a recurring series, not an occurrence
            *_system_fields(),
        ],
    )
    task = _object(
        "Task",
        "00T",
        [
            _id(),
            _ref("AccountId", "Account", updateable=False),
            _ref("WhatId", *_WHAT),
            _ref("WhoId", *_WHO),
            _ref("OwnerId", "User"),
            _text("Subject", 255),
            _long_text("Description", 32000),
            _picklist("TaskSubtype", "Email", "Call", "Task", "ListEmail", "Cadence", restricted=True),
            _picklist("Type", "Call", "Email", "Meeting", "Other"),
            _picklist("CallType", "Inbound", "Outbound", "Internal", restricted=True),
            _f("CallDurationInSeconds", "int", precision=8),
            _picklist("Status", "Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"),
            _flag("IsClosed", updateable=False),  # the sandbox derives it from Status, as Salesforce does
            _f("ActivityDate", "date"),
            _f("CompletedDateTime", "datetime", updateable=False),
            *_system_fields(),
        ],
    )
    email = _object(
        "EmailMessage",
        "02s",
        [
            _id(),
            _ref("ParentId", "Case"),
            _ref("RelatedToId", *_WHAT),
            _ref("ActivityId", "Task"),
            _text("Subject", 3000),
            _long_text("TextBody", 131072),
            _f("FromAddress", "email", length=1000),
            _text("ToAddress", 4000),
            _flag("Incoming"),
            _f("MessageDate", "datetime"),
            _picklist("Status", "0", "1", "2", "3", "4", "5"),
            *_system_fields(),
        ],
    )
    case = _object(
        "Case",
        "500",
        [
            _id(),
            _ref("AccountId", "Account"),
            _text("CaseNumber", 30, updateable=False),
            _text("Subject", 255),
            _long_text("Description", 32000),
            _picklist("Status", "New", "Working", "Escalated", "Closed"),
            _picklist("Priority", "Low", "Medium", "High", "Urgent"),
            _picklist("Origin", "Phone", "Email", "Web"),
            _flag("IsClosed", updateable=False),
            _f("ClosedDate", "datetime", updateable=False),
            *_system_fields(),
        ],
    )
    opportunity = _object(
        "Opportunity",
        "006",
        [
            _id(),
            _ref("AccountId", "Account"),
            _text("Name", 120, nillable=False),
            _picklist("Type", "New Business", "Existing Business", "Renewal"),
            _picklist(
                "StageName",
                "Prospecting",
                "Qualification",
                "Proposal",
                "Negotiation",
                "Closed Won",
                "Closed Lost",
                nillable=False,
            ),
            _number("Amount", 18, 2, "currency"),
            _f("CloseDate", "date", nillable=False),
            _flag("IsClosed", updateable=False),
            _flag("IsWon", updateable=False),
            *_system_fields(),
        ],
    )
    return [account, user, event, task, email, case, opportunity]


SNAPSHOT_OBJECT: Final = "Health_Snapshot__c"
SNAPSHOT_KEY: Final = "Snapshot_Key__c"


def _custom_objects() -> list[SObjectSpec]:
    """The custom objects Healthbeat's Metadata API package deploys (`healthbeat salesforce fields --package`):
    one health snapshot per account and day, matched on its external id (the account's Id and the day)."""
    snapshot = _object(
        SNAPSHOT_OBJECT,
        "a05",
        [
            _id(),
            _text("Name", 80, updateable=False, nillable=False),  # an Auto Number name field: Salesforce fills it
            _ref("Account__c", "Account"),
            _f("Date__c", "date"),
            _number("Score__c", 5, 2),
            _text("Band__c", 40),
            _number("Churn_Risk__c", 5, 2),
            _number("Expansion_Readiness__c", 5, 2),
            _text("Confidence__c", 40),
            _text(SNAPSHOT_KEY, 40, external_id=True, unique=True),
            *_system_fields(),
        ],
    )
    return [snapshot]


def build_schema(missing_fields: Mapping[str, Set[str]] | None = None,
                 read_only_fields: Mapping[str, Set[str]] | None = None) -> Schema:
    """The sandbox org, minus ``missing_fields`` (object name → field names; ``{"*"}`` drops the object).

    Tests use the removals to play an org where a custom field was never deployed or where a
    feature (Email-to-Case's ``EmailMessage``) is not enabled. ``Id`` cannot be removed.
    ``read_only_fields`` (object name → field names) are fields the integration user's profile and permission
    sets grant Read but not Edit (field-level security): describe reports them ``updateable: false`` and an
    update that sets one fails that record with ``INVALID_FIELD_FOR_INSERT_UPDATE``.
    """
    missing = {name.lower(): {f.lower() for f in names} for name, names in (missing_fields or {}).items()}
    known = {o.name.lower(): o for o in [*_standard_objects(), *_custom_objects()]}
    for name, names in missing.items():
        if name not in known:
            raise KeyError(f"missing_fields names an unknown sObject: {name!r}")
        spec = known[name]
        unknown = names - {f.lower() for f in spec.fields} - {WHOLE_OBJECT}
        if unknown:
            raise KeyError(f"missing_fields names unknown {spec.name} fields: {sorted(unknown)}")
        if "id" in names:
            raise ValueError("Id cannot be removed; drop the whole object with '*'")
    read_only = {name.lower(): {f.lower() for f in names} for name, names in (read_only_fields or {}).items()}
    for name, names in read_only.items():
        if name not in known:
            raise KeyError(f"read_only_fields names an unknown sObject: {name!r}")
        unknown = names - {f.lower() for f in known[name].fields}
        if unknown:
            raise KeyError(f"read_only_fields names unknown {known[name].name} fields: {sorted(unknown)}")
    objects = []
    for name, spec in known.items():
        removed = missing.get(name, set())
        if WHOLE_OBJECT in removed:
            continue
        locked = read_only.get(name, set())
        kept = {n: (dataclasses.replace(f, updateable=False) if n.lower() in locked else f)
                for n, f in spec.fields.items() if n.lower() not in removed}
        objects.append(SObjectSpec(name=spec.name, key_prefix=spec.key_prefix, fields=kept, label=spec.label))
    return Schema(objects)


# --- values --------------------------------------------------------------------------------

_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_datetime(text: str, *, require_zone: bool = False) -> datetime:
    """Parse the ISO forms Salesforce accepts (``Z``, ``+0000``, ``+00:00``, optional millis).

    Without a zone the value is UTC, as the REST API reads it; SOQL literals need a zone, hence
    ``require_zone``. Raises ``ValueError`` on anything else.
    """
    match = _DATETIME_RE.match(text)
    if not match or (require_zone and match.group(8) is None):
        raise ValueError(f"not a Salesforce datetime: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    micros = int((match.group(7) or "0").ljust(6, "0"))
    zone_text = match.group(8)
    tz: timezone = UTC
    if zone_text and zone_text != "Z":
        sign = -1 if zone_text[0] == "-" else 1
        digits = zone_text[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    return datetime(year, month, day, hour, minute, second, micros, tzinfo=tz).astimezone(UTC)


def format_datetime(value: datetime) -> str:
    """Salesforce's output form: ``2024-01-01T00:00:00.000+0000`` (UTC, milliseconds)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def parse_date(text: str) -> date:
    """Parse ``YYYY-MM-DD``; raises ``ValueError`` otherwise."""
    if not _DATE_RE.match(text):
        raise ValueError(f"not a Salesforce date: {text!r}")
    return date.fromisoformat(text)


def normalize_value(spec: FieldSpec, value: Any) -> Any:
    """Check ``value`` for ``spec`` and return it in stored form, or raise :class:`FieldValueError`.

    Accepts what JSON carries plus ``datetime``/``date`` objects (for generators written in
    Python); numbers are rounded to the field's scale, as Salesforce rounds them on save.
    """
    if value is None:
        if not spec.nillable:
            raise FieldValueError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{spec.name}]", spec.name)
        return None
    kind = spec.type
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _json_error(spec, "boolean", value)
        return value
    if kind in NUMBER_TYPES:
        return _normalize_number(spec, value)
    if kind == "datetime":
        return _normalize_datetime(spec, value)
    if kind == "date":
        return _normalize_date(spec, value)
    if not isinstance(value, str):
        raise _json_error(spec, "String", value)
    return _normalize_text(spec, value)


def _normalize_number(spec: FieldSpec, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _json_error(spec, "double" if spec.type != "int" else "int", value)
    if spec.type == "int":
        if isinstance(value, float) and not value.is_integer():
            raise _json_error(spec, "int", value)
        number: float | int = int(value)
        limit = 10**spec.precision if spec.precision else 2**31
    else:
        number = round(float(value), spec.scale)
        limit = 10 ** (spec.precision - spec.scale) if spec.precision else 10**18
    if abs(number) >= limit:
        raise FieldValueError(
            "NUMBER_OUTSIDE_VALID_RANGE",
            f"{spec.label}: value outside of valid range on numeric field: {value}",
            spec.name,
        )
    return number


def _normalize_datetime(spec: FieldSpec, value: Any) -> str:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, str):
        try:
            return format_datetime(parse_datetime(value))
        except ValueError:
            pass
    raise _json_error(spec, "datetime", value)


def _normalize_date(spec: FieldSpec, value: Any) -> str:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return parse_date(value).isoformat()
        except ValueError:
            pass
    raise _json_error(spec, "date", value)


def _normalize_text(spec: FieldSpec, value: str) -> str | None:
    if spec.type == "reference" and not value:
        return None  # Salesforce stores an empty lookup as null
    if spec.type in ("id", "reference"):
        try:
            return to_18(value)
        except ValueError:
            raise FieldValueError(
                "MALFORMED_ID", f"{spec.label}: id value of incorrect type: {value}", spec.name
            ) from None
    if spec.length and len(value) > spec.length:
        raise FieldValueError(
            "STRING_TOO_LONG",
            f"{spec.label}: data value too large: {value[:40]}{'...' if len(value) > 40 else ''} "
            f"(max length={spec.length})",
            spec.name,
        )
    if spec.restricted_picklist and value not in spec.picklist_values:
        raise FieldValueError(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"{spec.label}: bad value for restricted picklist field: {value}",
            spec.name,
        )
    return value


def _json_error(spec: FieldSpec, type_name: str, value: Any) -> FieldValueError:
    shown = "VALUE_STRING" if isinstance(value, str) else type(value).__name__.upper()
    return FieldValueError(
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {type_name} from {shown} value {value} "
        f"or request may be missing a required field (field {spec.name})",
        spec.name,
    )
