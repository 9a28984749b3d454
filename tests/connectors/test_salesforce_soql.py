"""The SOQL evaluator answers, and refuses, queries the way Salesforce does. Pure: no sandbox, no HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.salesforce.ids import make_id, to_18
from connectors.salesforce.schema import Schema, build_schema, normalize_value
from connectors.salesforce.soql import SoqlError, compile_query, parse

ACME, GLOBEX, INITECH, UMBRELLA = (make_id("001", n) for n in (1, 2, 3, 4))

ACCOUNTS: list[dict[str, Any]] = [
    {
        "Id": ACME,
        "Name": "Acme",
        "Type": "Customer - Direct",
        "AnnualRevenue": 500.0,
        "IsDeleted": False,
        "SystemModstamp": "2024-01-01T10:00:00.000+0000",
        "Health_Override_Until__c": "2024-03-01",
    },
    {
        "Id": GLOBEX,
        "Name": "globex",
        "Type": "Prospect",
        "AnnualRevenue": None,
        "IsDeleted": False,
        "SystemModstamp": "2024-01-02T10:00:00.000+0000",
        "Health_Override_Until__c": None,
    },
    {
        "Id": INITECH,
        "Name": "Initech 100%",
        "Type": None,
        "AnnualRevenue": 100.0,
        "IsDeleted": False,
        "SystemModstamp": "2024-01-03T10:00:00.000+0000",
        "Health_Override_Until__c": "2024-01-15",
    },
    {
        "Id": UMBRELLA,
        "Name": "O'Brien & Co",
        "Type": "Customer - Direct",
        "AnnualRevenue": 2500.0,
        "IsDeleted": True,
        "SystemModstamp": "2024-01-04T10:00:00.000+0000",
        "Health_Override_Until__c": None,
    },
]


@pytest.fixture
def schema() -> Schema:
    return build_schema()


def run(soql: str, schema: Schema, records: list[dict[str, Any]] = ACCOUNTS) -> list[dict[str, Any]]:
    return compile_query(soql, schema).run(records)


def ids(soql: str, schema: Schema) -> list[str]:
    return [row["Id"] for row in run(soql, schema)]


def refusal(soql: str, schema: Schema) -> SoqlError:
    with pytest.raises(SoqlError) as caught:
        compile_query(soql, schema)
    return caught.value


# --- parsing and projection -----------------------------------------------------------------


def test_selected_fields_come_back_in_select_order_with_schema_casing(schema: Schema) -> None:
    rows = run("select name, ID from ACCOUNT where id = '" + ACME + "'", schema)
    assert rows == [{"Name": "Acme", "Id": ACME}]
    assert list(rows[0]) == ["Name", "Id"]


def test_keywords_are_case_insensitive(schema: Schema) -> None:
    assert ids("SeLeCt Id FrOm Account WhErE Name = 'Acme' oRdEr By Name AsC lImIt 1", schema) == [ACME]


def test_count_query_is_marked_and_counts_matching_rows(schema: Schema) -> None:
    bound = compile_query("SELECT COUNT() FROM Account WHERE Type = 'Customer - Direct'", schema)
    assert bound.is_count
    assert len(bound.run(ACCOUNTS)) == 2


def test_query_spanning_lines_reports_row_and_column_of_the_error(schema: Schema) -> None:
    error = refusal("SELECT Id\nFROM Account\nWHERE Nme = 'x'", schema)
    assert (error.row, error.column) == (3, 7)
    assert "ERROR at Row:3:Column:7" in error.message


# --- comparison operators -------------------------------------------------------------------


def test_text_equality_ignores_case_as_salesforce_does(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account WHERE Name = 'GLOBEX'", schema) == [GLOBEX]


@pytest.mark.parametrize("operator", ["!=", "<>"])
def test_not_equal_keeps_rows_whose_field_is_null(schema: Schema, operator: str) -> None:
    assert ids(f"SELECT Id FROM Account WHERE Type {operator} 'Prospect'", schema) == [ACME, INITECH, UMBRELLA]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("AnnualRevenue < 500", [INITECH]),
        ("AnnualRevenue <= 500", [ACME, INITECH]),
        ("AnnualRevenue > 500", [UMBRELLA]),
        ("AnnualRevenue >= 100.0", [ACME, INITECH, UMBRELLA]),
    ],
)
def test_ordering_operators_compare_numbers_and_never_match_null(
    schema: Schema, condition: str, expected: list[str]
) -> None:
    assert ids(f"SELECT Id FROM Account WHERE {condition}", schema) == expected


def test_equals_null_and_not_equals_null_select_by_presence(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account WHERE AnnualRevenue = null", schema) == [GLOBEX]
    assert ids("SELECT Id FROM Account WHERE AnnualRevenue != NULL", schema) == [ACME, INITECH, UMBRELLA]


def test_boolean_literals_match_checkbox_fields(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account WHERE IsDeleted = TRUE", schema) == [UMBRELLA]
    assert ids("SELECT Id FROM Account WHERE IsDeleted = false", schema) == [ACME, GLOBEX, INITECH]


def test_like_matches_percent_and_underscore_ignoring_case(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account WHERE Name LIKE 'a%'", schema) == [ACME]
    assert ids("SELECT Id FROM Account WHERE Name LIKE '_lobe_'", schema) == [GLOBEX]


def test_like_with_escaped_percent_matches_a_literal_percent_sign(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account WHERE Name LIKE '%100\\%'", schema) == [INITECH]
    assert ids("SELECT Id FROM Account WHERE Name LIKE '%1\\%'", schema) == []


def test_escaped_quote_inside_a_string_literal(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account WHERE Name = 'O\\'Brien & Co'", schema) == [UMBRELLA]


def test_in_and_not_in_lists(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account WHERE Name IN ('acme', 'Globex')", schema) == [ACME, GLOBEX]
    assert ids("SELECT Id FROM Account WHERE Name NOT IN ('acme', 'Globex')", schema) == [INITECH, UMBRELLA]


def test_fifteen_character_id_literal_matches_the_eighteen_character_id(schema: Schema) -> None:
    assert ids(f"SELECT Id FROM Account WHERE Id = '{GLOBEX[:15]}'", schema) == [GLOBEX]


def test_malformed_id_literal_is_refused(schema: Schema) -> None:
    error = refusal("SELECT Id FROM Account WHERE Id = 'not-an-id'", schema)
    assert error.error_code == "INVALID_QUERY_FILTER_OPERATOR"
    assert "invalid ID field: not-an-id" in error.message


# --- logical operators ----------------------------------------------------------------------


def test_and_or_not_and_parentheses_combine(schema: Schema) -> None:
    soql = "SELECT Id FROM Account WHERE (Type = 'Prospect' OR AnnualRevenue > 1000) AND (NOT Name = 'globex')"
    assert ids(soql, schema) == [UMBRELLA]


def test_leading_not_negates_the_condition_that_follows(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account WHERE NOT Type = 'Customer - Direct'", schema) == [GLOBEX, INITECH]


def test_mixing_and_with_or_without_parentheses_is_refused_like_salesforce(schema: Schema) -> None:
    error = refusal("SELECT Id FROM Account WHERE Name = 'a' AND Type = 'b' OR Name = 'c'", schema)
    assert error.error_code == "MALFORMED_QUERY"
    assert error.message.endswith("unexpected token: OR")
    assert error.column == 56


def test_not_after_and_is_refused_like_salesforce(schema: Schema) -> None:
    assert refusal("SELECT Id FROM Account WHERE Name = 'a' AND NOT Type = 'b'", schema).error_code == (
        "MALFORMED_QUERY"
    )


# --- datetimes and dates ------------------------------------------------------------------


@pytest.mark.parametrize(
    "literal",
    [
        "2024-01-02T10:00:00Z",
        "2024-01-02T10:00:00.000Z",
        "2024-01-02T10:00:00.000+0000",
        "2024-01-02T10:00:00+00:00",
        "2024-01-02T02:00:00-08:00",
        "2024-01-02T11:00:00.000+0100",
    ],
)
def test_datetime_literal_forms_compare_as_the_same_instant(schema: Schema, literal: str) -> None:
    assert ids(f"SELECT Id FROM Account WHERE SystemModstamp >= {literal}", schema) == [GLOBEX, INITECH, UMBRELLA]
    assert ids(f"SELECT Id FROM Account WHERE SystemModstamp = {literal}", schema) == [GLOBEX]


def test_datetime_literal_without_zone_is_malformed(schema: Schema) -> None:
    error = refusal("SELECT Id FROM Account WHERE SystemModstamp > 2024-01-01T00:00:00", schema)
    assert error.error_code == "MALFORMED_QUERY"
    assert "time zone" in error.message


def test_plus_sign_decoded_as_space_in_a_url_breaks_the_datetime_literal(schema: Schema) -> None:
    # what Salesforce receives when a client puts "+0000" in a query string unencoded
    error = refusal("SELECT Id FROM Account WHERE SystemModstamp > 2024-01-01T00:00:00.000 0000", schema)
    assert error.error_code == "MALFORMED_QUERY"


def test_date_field_compares_with_a_date_literal(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account WHERE Health_Override_Until__c > 2024-02-01", schema) == [ACME]


def test_date_literal_on_a_datetime_field_is_refused_with_salesforce_message(schema: Schema) -> None:
    error = refusal("SELECT Id FROM Account WHERE SystemModstamp > 2024-01-01", schema)
    assert error.error_code == "INVALID_FIELD"
    assert (
        "value of filter criterion for field 'SystemModstamp' must be of type dateTime and should not be "
        "enclosed in quotes"
    ) in error.message


def test_quoted_datetime_is_refused(schema: Schema) -> None:
    assert (
        refusal("SELECT Id FROM Account WHERE SystemModstamp > '2024-01-01T00:00:00Z'", schema).error_code
        == "INVALID_FIELD"
    )


def test_unquoted_number_on_a_text_field_is_refused(schema: Schema) -> None:
    error = refusal("SELECT Id FROM Account WHERE Name = 42", schema)
    assert "must be of type string and should be enclosed in quotes" in error.message


# --- ORDER BY, LIMIT, OFFSET --------------------------------------------------------------


def test_order_by_ascending_puts_nulls_first_by_default(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account ORDER BY AnnualRevenue", schema) == [GLOBEX, INITECH, ACME, UMBRELLA]


def test_order_by_descending_nulls_last(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account ORDER BY AnnualRevenue DESC NULLS LAST", schema) == [
        UMBRELLA,
        ACME,
        INITECH,
        GLOBEX,
    ]


def test_order_by_text_ignores_case(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account ORDER BY Name", schema) == [ACME, GLOBEX, INITECH, UMBRELLA]


def test_order_by_several_fields_breaks_ties_with_the_next(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account ORDER BY Type DESC NULLS LAST, AnnualRevenue DESC", schema) == [
        GLOBEX,
        UMBRELLA,
        ACME,
        INITECH,
    ]


def test_limit_and_offset_page_the_ordered_rows(schema: Schema) -> None:
    assert ids("SELECT Id FROM Account ORDER BY Name LIMIT 2 OFFSET 1", schema) == [GLOBEX, INITECH]


def test_offset_above_two_thousand_is_refused(schema: Schema) -> None:
    assert refusal("SELECT Id FROM Account OFFSET 2001", schema).error_code == "NUMBER_OUTSIDE_VALID_RANGE"


# --- lower bounds (what a sorted index may skip) -------------------------------------------------

STAMP = "2024-01-02T10:00:00.000+0000"


def lower_bounds(where: str, schema: Schema) -> dict[str, Any]:
    return dict(compile_query(f"SELECT Id FROM Account WHERE {where}", schema).lower_bounds)


@pytest.mark.parametrize("op", [">", ">=", "="])
def test_a_datetime_compared_from_below_is_bounded_by_the_literal(schema: Schema, op: str) -> None:
    assert lower_bounds(f"SystemModstamp {op} 2024-01-02T10:00:00Z", schema) == {"SystemModstamp": STAMP}


def test_the_incremental_cursor_condition_is_bounded_by_its_stamp(schema: Schema) -> None:
    where = "(SystemModstamp > 2024-01-02T10:00:00Z OR (SystemModstamp = 2024-01-02T10:00:00Z AND Id > '" + ACME + "'))"
    assert lower_bounds(where, schema) == {"SystemModstamp": STAMP}


def test_an_or_is_bounded_by_its_lowest_branch_and_an_and_by_its_highest_operand(schema: Schema) -> None:
    assert lower_bounds("SystemModstamp > 2024-01-02T10:00:00Z OR SystemModstamp > 2024-01-03T10:00:00Z", schema) == {
        "SystemModstamp": STAMP
    }
    assert lower_bounds("SystemModstamp > 2024-01-01T10:00:00Z AND SystemModstamp > 2024-01-02T10:00:00Z", schema) == {
        "SystemModstamp": STAMP
    }


@pytest.mark.parametrize(
    "where",
    [
        "SystemModstamp > 2024-01-02T10:00:00Z OR Name = 'Acme'",
        "NOT SystemModstamp < 2024-01-02T10:00:00Z",
        "SystemModstamp < 2024-01-02T10:00:00Z",
        "SystemModstamp != 2024-01-02T10:00:00Z",
        "SystemModstamp IN (2024-01-02T10:00:00Z)",
        "Name > 'Acme'",
    ],
)
def test_conditions_that_let_any_low_or_text_value_through_bound_nothing(schema: Schema, where: str) -> None:
    assert lower_bounds(where, schema) == {}


def upper_bounds(where: str, schema: Schema) -> dict[str, Any]:
    return dict(compile_query(f"SELECT Id FROM Account WHERE {where}", schema).upper_bounds)


@pytest.mark.parametrize("op", ["<", "<=", "="])
def test_a_datetime_compared_from_above_is_bounded_by_the_literal(schema: Schema, op: str) -> None:
    assert upper_bounds(f"SystemModstamp {op} 2024-01-02T10:00:00Z", schema) == {"SystemModstamp": STAMP}


def test_a_window_of_the_incremental_cursor_is_bounded_on_both_sides(schema: Schema) -> None:
    where = ("(SystemModstamp > 2024-01-01T10:00:00Z OR (SystemModstamp = 2024-01-01T10:00:00Z AND Id > '" + ACME
             + "')) AND SystemModstamp < 2024-01-02T10:00:00Z")
    assert lower_bounds(where, schema) == {"SystemModstamp": "2024-01-01T10:00:00.000+0000"}
    assert upper_bounds(where, schema) == {"SystemModstamp": STAMP}


def test_an_and_is_bounded_above_by_its_lowest_operand_and_an_or_by_its_highest_branch(schema: Schema) -> None:
    assert upper_bounds("SystemModstamp < 2024-01-02T10:00:00Z AND SystemModstamp < 2024-01-03T10:00:00Z", schema) == {
        "SystemModstamp": STAMP
    }
    assert upper_bounds("SystemModstamp < 2024-01-01T10:00:00Z OR SystemModstamp < 2024-01-02T10:00:00Z", schema) == {
        "SystemModstamp": STAMP
    }


@pytest.mark.parametrize(
    "where",
    [
        "SystemModstamp < 2024-01-02T10:00:00Z OR Name = 'Acme'",
        "NOT SystemModstamp > 2024-01-02T10:00:00Z",
        "SystemModstamp >= 2024-01-02T10:00:00Z",
        "SystemModstamp != 2024-01-02T10:00:00Z",
        "Name < 'Acme'",
    ],
)
def test_conditions_that_let_any_high_or_text_value_through_bound_nothing_from_above(
    schema: Schema, where: str
) -> None:
    assert upper_bounds(where, schema) == {}


def test_order_is_total_only_when_ordered_by_id(schema: Schema) -> None:
    assert compile_query("SELECT Id FROM Account ORDER BY SystemModstamp, Id", schema).order_is_total
    assert not compile_query("SELECT Id FROM Account ORDER BY SystemModstamp", schema).order_is_total


# --- refusals -------------------------------------------------------------------------------


def test_unknown_field_gets_salesforce_invalid_field_message(schema: Schema) -> None:
    error = refusal("SELECT Id, Helth_Score__c FROM Account", schema)
    assert error.error_code == "INVALID_FIELD"
    assert error.message.startswith(
        "\nSELECT Id, Helth_Score__c FROM Account\n           ^\nERROR at Row:1:Column:12\n"
    )
    assert "No such column 'Helth_Score__c' on entity 'Account'" in error.message


def test_unknown_object_is_invalid_type(schema: Schema) -> None:
    error = refusal("SELECT Id FROM Acount", schema)
    assert error.error_code == "INVALID_TYPE"
    assert "sObject type 'Acount' is not supported" in error.message


def test_field_removed_from_the_org_is_unknown() -> None:
    schema = build_schema({"Account": {"Health_Score__c"}})
    assert refusal("SELECT Health_Score__c FROM Account", schema).error_code == "INVALID_FIELD"


def test_object_removed_from_the_org_is_unknown() -> None:
    schema = build_schema({"EmailMessage": {"*"}})
    assert refusal("SELECT Id FROM EmailMessage", schema).error_code == "INVALID_TYPE"


@pytest.mark.parametrize(
    ("soql", "detail"),
    [
        ("SELECT Id Account", "unexpected token: Account"),
        ("SELECT FROM Account", "unexpected token: FROM"),
        ("SELECT Id FROM Account WHERE", "unexpected token: <EOF>"),
        ("SELECT Id FROM Account WHERE Name = 'open", "unterminated string literal"),
        ("SELECT Id FROM Account LIMIT ten", "unexpected token: ten"),
        ("SELECT Id FROM Account extra", "unexpected token: extra"),
        ("SELECT Id FROM Account WHERE Name IN ()", "unexpected token: )"),
    ],
)
def test_syntax_errors_are_malformed_query_with_the_offending_token(soql: str, detail: str) -> None:
    with pytest.raises(SoqlError) as caught:
        parse(soql)
    assert caught.value.error_code == "MALFORMED_QUERY"
    assert caught.value.message.endswith(detail)


def test_duplicate_selected_field_is_refused(schema: Schema) -> None:
    assert "duplicate field selected: Name" in refusal("SELECT Name, name FROM Account", schema).message


def test_long_text_area_cannot_be_filtered(schema: Schema) -> None:
    error = refusal("SELECT Id FROM Account WHERE Health_Reason__c = 'x'", schema)
    assert "field 'Health_Reason__c' can not be filtered in a query call" in error.message


@pytest.mark.parametrize(
    ("soql", "feature"),
    [
        ("SELECT Owner.Email FROM Account", "relationship path"),
        ("SELECT COUNT(Id) FROM Account", "COUNT(field)"),
        ("SELECT Id FROM Account WHERE CreatedDate = TODAY", "date literal"),
        ("SELECT Id FROM Account GROUP BY Type", "GROUP clauses"),
        ("SELECT Id FROM Account WHERE Id IN (SELECT AccountId FROM Case)", "semi-join"),
    ],
)
def test_features_beyond_the_sandbox_are_refused_saying_so(schema: Schema, soql: str, feature: str) -> None:
    error = refusal(soql, schema)
    assert feature in error.message
    assert "not supported by the Healthbeat sandbox" in error.message


def test_to_18_matches_salesforce_documented_example() -> None:
    assert to_18("001A0000006Vm9r") == "001A0000006Vm9rIAC"


def test_schema_stores_an_empty_lookup_as_null() -> None:
    account = build_schema().sobject("Account")
    assert account is not None
    owner = account.field("ownerid")
    assert owner is not None
    assert normalize_value(owner, "") is None
