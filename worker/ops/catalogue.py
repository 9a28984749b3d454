"""What `healthbeat browse` says about the store: every table and view in words, the facets and sort orders
worth having, and the canned queries ops ask most, as Datasette metadata.

Kept in code beside the schema's names rather than in a YAML file shipped as package data: a migration that adds
a table without a line here fails `tests/worker/test_browse.py`, and mypy checks the shape. Every canned query is
a SELECT (a `WITH ... SELECT`); none is a Datasette write query, and the test says so.

Tables ops has no use for are hidden, not left out: Datasette lists them under "hidden tables" with their
description, and a link still opens them. Text written by customers (email bodies, ticket comments, Slack
messages, quarantined payloads) is shown, cut to `TRUNCATE_CELLS` characters on the HTML pages: the store holds
no secrets (credentials live in the environment), its file is readable by its owner alone, and `browse` binds to
loopback, so whoever sees the page could already read the file with `sqlite3`; hiding the text would only make
the page less useful to them. Retention (`HEALTHBEAT_RETENTION_TEXT`) clears old text in the store itself.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Final

DATABASE: Final = "healthbeat"
"""The store's name in Datasette's URLs (`/healthbeat/scores`), whatever its file is called."""

TRUNCATE_CELLS: Final = 160
"""Characters of a long cell (an email body, a JSON summary) shown on a table page; the row's JSON has it whole."""


@dataclass(frozen=True)
class Table:
    """One table or view as ops reads it: what a row is, the columns that need a word, the useful facets."""

    title: str
    description: str
    columns: dict[str, str] = field(default_factory=dict)
    facets: tuple[str, ...] = ()
    sortable: tuple[str, ...] = ()
    sort: str | None = None
    sort_desc: str | None = None
    hidden: bool = False

    def metadata(self) -> dict[str, Any]:
        found: dict[str, Any] = {"title": self.title, "description": self.description}
        if self.columns:
            found["columns"] = dict(self.columns)
        if self.facets:
            found["facets"] = list(self.facets)
        if self.sortable:
            found["sortable_columns"] = list(self.sortable)
        if self.sort:
            found["sort"] = self.sort
        if self.sort_desc:
            found["sort_desc"] = self.sort_desc
        if self.hidden:
            found["hidden"] = True
        return found


_ACCOUNT = "Salesforce Account Id."
_BAND = "red, yellow or green by the scorecard's thresholds; unknown when too little data covers the account."
_SCORE = "Health, 0 to 100 (a CSM's override when one is in force)."

TABLES: Final[dict[str, Table]] = {
    # -- the scores and why ---------------------------------------------------------------------------------
    "account_health": Table(
        "Account health", "Every live account with its owner and latest score, worst first: the view to start from.",
        {"owner": "The account owner's name in Salesforce.", "score": _SCORE, "band": _BAND,
         "trend": "Change over the scorecard's trend window (30 days as shipped), with an arrow.",
         "reason": "The measures that moved the score most, in words.",
         "coverage": "Share of the scorecard's weight that had data (0 to 1).",
         "overridden": "1 when a CSM pinned the score by hand."},
        facets=("band", "owner", "trend"), sortable=("name", "owner", "score", "band", "churn_risk",
                                                     "expansion_readiness", "coverage", "scored_at"),
        sort="score"),
    "scores": Table(
        "Scores", "The latest score of each account, with the parts behind it (one row per account).",
        {"account_id": _ACCOUNT, "score": _SCORE, "band": _BAND,
         "computed_score": "The scorecard's own score, before any override.",
         "trend_delta": "Points gained (or lost, negative) over the trend window.",
         "segment": "The scorecard segment whose weights scored the account (empty without segments).",
         "churn_risk": "Estimated chance of churn at the next renewal (0 to 1).",
         "expansion_readiness": "How ready the account looks for an upsell (0 to 1).",
         "confidence": "How far to trust the score: coverage, and how fresh the data is.",
         "measures": "JSON: each measure's raw value, points and weight (healthbeat explain reads it).",
         "churn_drivers": "JSON: the learned churn model's largest terms, when the model is in force.",
         "scorecard_hash": "Which version of scorecard.yaml scored it."},
        facets=("band", "segment", "confidence"),
        sortable=("score", "band", "trend_delta", "churn_risk", "expansion_readiness", "coverage", "scored_at"),
        sort="score"),
    "score_history": Table(
        "Score history", "One row per account per day it was scored: what the trend and backtests read.",
        {"day": "The day (UTC) of the score.", "score": _SCORE, "band": _BAND},
        facets=("band", "day"), sortable=("day", "score", "churn_risk"), sort_desc="day"),
    "overrides": Table(
        "Overrides", "Scores pinned by a CSM (healthbeat override set or the Slack button), until they expire.",
        {"value": "The pinned score.", "until": "When the pin lapses (empty: until cleared).",
         "set_by": "Who pinned it."},
        sortable=("set_at", "until", "value"), sort_desc="set_at"),
    # -- what came in ---------------------------------------------------------------------------------------
    "accounts": Table(
        "Accounts", "Salesforce Accounts as last synced (deleted and merged ones kept, flagged).",
        {"id": _ACCOUNT, "owner_id": "The owner's Salesforce User Id (names are in users).",
         "contracted_seats": "Seats on the contract, for seat utilisation.",
         "override_value": "A score pinned in Salesforce itself (Health_Override__c).",
         "is_deleted": "1 when deleted in Salesforce.", "merged_into": "The surviving account after a merge."},
        facets=("owner_id", "type", "industry", "is_deleted"), sortable=("name", "annual_revenue",
                                                                         "contracted_seats", "modstamp"),
        sort="name"),
    "users": Table(
        "Users", "People in Salesforce and Zendesk: owners of accounts, agents on tickets.",
        {"source": "salesforce or zendesk.", "source_id": "The user's Id in that system."},
        facets=("source", "role", "is_active")),
    "opportunities": Table(
        "Opportunities", "Salesforce Opportunities: renewals and upsells, for churn and expansion measures.",
        {"account_id": _ACCOUNT, "created_at": "When it was created in Salesforce (backtests see it from then)."},
        facets=("type", "stage", "is_closed", "is_won"), sortable=("close_date", "amount", "created_at"),
        sort_desc="close_date"),
    "activities": Table(
        "Activities", "Emails, meetings, calls, tickets and ticket comments from Salesforce and Zendesk.",
        {"kind": "email, meeting, call, ticket or ticket_comment.",
         "direction": "in, out, both or unknown.", "related_id": "The record it was logged against.",
         "parent_id": "A comment's ticket.", "text": "The body (cleared after HEALTHBEAT_RETENTION_TEXT).",
         "text_hash": "Hash of the text, the key of its sentiment.",
         "sentiment": "VADER compound score of the text, -1 (angry) to 1 (happy)."},
        facets=("source", "kind", "direction"), sortable=("occurred_at", "sentiment")),
    "zendesk_organizations": Table(
        "Zendesk organizations", "Zendesk organizations and the Salesforce account each maps to.",
        {"account_id": _ACCOUNT, "mapped_by": "How the mapping was found: external_id or domain."},
        facets=("mapped_by",)),
    "usage_daily": Table(
        "Product usage", "Daily product usage per account, read from the usage files.",
        {"account_id": _ACCOUNT, "active_users": "Distinct users active that day.",
         "features_used": "JSON list of the features used.", "source_file": "The file the row came from."},
        facets=("day",), sortable=("day", "active_users", "events"), sort_desc="day"),
    "sync_state": Table(
        "Sync cursors", "Where each stream's incremental sync stands: its cursor and records read so far.",
        {"stream": "source.object, such as salesforce.Account or zendesk.tickets.",
         "cursor": "The modification time (or token) the next sync starts from."},
        sortable=("stream", "records", "updated_at"), sort="stream"),
    "quarantine": Table(
        "Quarantine", "Records that failed validation, kept with the reason instead of being stored.",
        {"source": "salesforce, zendesk or usage.", "stream": "The object or file they came from.",
         "raw": "The payload as received (JSON)."},
        facets=("source", "stream"), sortable=("seen_at", "source", "stream"), sort_desc="id"),
    # -- what went out --------------------------------------------------------------------------------------
    "alerts": Table(
        "Alert states", "Each alert rule's state for each account: inactive, pending, firing or resolved.",
        {"rule": "The rule's name in alerts.yaml.", "episode": "Counts the times it fired for this account.",
         "pending_cycles": "Cycles the condition has held while pending."},
        facets=("rule", "state"), sortable=("since", "updated_at", "last_notified_at", "episode"),
        sort_desc="updated_at"),
    "open_alerts": Table(
        "Open alerts", "Alerts pending or firing now, with the account's name.",
        facets=("rule", "state"), sortable=("since", "last_notified_at"), sort_desc="since"),
    "outbox": Table(
        "Outbox", "Everything owed to Salesforce and Slack: score write-backs, snapshots and nudges, with status.",
        {"kind": "salesforce (a score written back), salesforce_snapshot (a day's history) or "
                 "slack (a nudge).",
         "status": "pending, inflight, sent, confirmed, failed, dead (given up on) or superseded.",
         "payload": "JSON: the fields to write or the message to post.",
         "remote_ref": "Salesforce Id or Slack message timestamp once delivered.",
         "not_before": "A delivery window's opening, in the owner's time zone."},
        facets=("kind", "status"), sortable=("created_at", "sent_at", "attempts"), sort_desc="id"),
    "pending_outbox": Table(
        "Pending outbox", "Outbox rows not yet delivered (pending, inflight, failed) or given up on (dead).",
        facets=("kind", "status"), sortable=("created_at", "attempts"), sort_desc="id"),
    "writeback_state": Table(
        "Written to Salesforce", "Per account, the fields last written to Salesforce: a score is sent only if "
        "they changed.", {"account_id": _ACCOUNT, "fields": "JSON: field name to value."},
        sortable=("written_at",), sort_desc="written_at"),
    "silences": Table(
        "Silences", "Nudges held back until a time (healthbeat silence add); states are still kept.",
        {"rule": "Only this rule (empty: every rule).", "account_id": "Only this account (empty: every one).",
         "owner": "Only this owner's accounts."},
        facets=("rule", "owner"), sortable=("until", "created_at"), sort_desc="created_at"),
    "feedback": Table(
        "Feedback", "What CSMs said with the buttons on each nudge: useful, not useful, score wrong.",
        {"axis": "The question answered: usefulness, or the score (its correctness).",
         "verdict": "useful, not_useful or score_wrong.", "rule": "The alert rule behind the nudge.",
         "proposed_value": "The score a CSM proposed with 'score wrong'.",
         "override_status": "What became of the proposal: proposed, accepted or declined."},
        facets=("rule", "verdict", "axis", "override_status"), sortable=("created_at", "updated_at"),
        sort_desc="created_at"),
    "home_tabs": Table(
        "Slack Home tabs", "Slack users who opened Healthbeat's Home tab, the owner each is, and what it shows.",
        {"owner_id": "The Salesforce User found by the Slack user's email.",
         "shown": "JSON: the bands the tab last showed (republished only when they change)."},
        sortable=("opened_at", "published_at"), sort_desc="opened_at"),
    "cycles": Table(
        "Cycles", "One row per cycle (sync, score, evaluate, write back, notify, prune): when, status, summary.",
        {"status": "running, ok, stopped or failed.",
         "summary": "JSON: records per stream, accounts scored, alerts, write-backs and nudges."},
        facets=("status",), sortable=("started_at", "finished_at"), sort_desc="id"),
    # -- bookkeeping, hidden --------------------------------------------------------------------------------
    "account_changes": Table(
        "Work owed", "The accounts each stage still owes work (score, evaluate, write back), marked by triggers "
        "and cleared by the stage: a long list here means a stage is behind.",
        facets=("stage",)),
    "feedback_messages": Table(
        "Feedback messages", "Copies of the Slack messages CSMs answered, for redrawing them (internal).",
        hidden=True),
    "sentiment_cache": Table(
        "Sentiment cache", "Sentiment per text hash and model, so a text is scored once (internal).", hidden=True),
    "schema_migrations": Table(
        "Schema migrations", "The schema versions applied to this file, and when (internal).", hidden=True),
}


@dataclass(frozen=True)
class Query:
    """A canned query: a question ops asks often, answered by one SELECT."""

    title: str
    description: str
    sql: str

    def metadata(self) -> dict[str, Any]:
        return {"title": self.title, "description": self.description, "sql": self.sql.strip()}


_OWNER = "LEFT JOIN users u ON u.source = 'salesforce' AND u.source_id = a.owner_id"

QUERIES: Final[dict[str, Query]] = {
    "turned_red_this_week": Query(
        "Accounts that turned red this week",
        "Red now, after a yellow or green score: the first red day is within the 7 days up to the latest scores. "
        "Accounts red since they were first scored are left out.",
        f"""
WITH latest AS (SELECT date(max(scored_at)) AS day FROM scores),
red AS (
    SELECT s.account_id, s.score, s.segment, s.reason,
           (SELECT max(h.day) FROM score_history h
            WHERE h.account_id = s.account_id AND h.band IN ('green', 'yellow')
              AND h.day >= date((SELECT day FROM latest), '-90 days')) AS last_not_red
    FROM scores s WHERE s.band = 'red'),
turned AS (
    SELECT r.*, (SELECT h.band FROM score_history h
                 WHERE h.account_id = r.account_id AND h.day = r.last_not_red) AS was,
           (SELECT min(h.day) FROM score_history h
            WHERE h.account_id = r.account_id AND h.band = 'red' AND h.day > r.last_not_red) AS red_since
    FROM red r WHERE r.last_not_red IS NOT NULL)
SELECT t.account_id, a.name, u.name AS owner, t.segment, t.score, t.was, t.last_not_red, t.red_since, t.reason
FROM turned t JOIN accounts a ON a.id = t.account_id {_OWNER}
WHERE t.red_since >= date((SELECT day FROM latest), '-6 days')
ORDER BY t.red_since DESC, t.score"""),
    "biggest_drops": Query(
        "Biggest drops",
        "The 50 accounts whose health fell most over the scorecard's trend window (30 days as shipped).",
        f"""
SELECT s.account_id, a.name, u.name AS owner, s.segment, s.score, s.band, s.trend_delta AS change, s.trend,
       s.reason
FROM scores s JOIN accounts a ON a.id = s.account_id AND a.is_deleted = 0 {_OWNER}
WHERE s.trend_delta < 0
ORDER BY s.trend_delta, s.score
LIMIT 50"""),
    "nudges_by_rule": Query(
        "Nudges and their feedback by rule",
        "Per alert rule: nudges sent (one per episode, whether it went to the owner, a channel or both), nudges "
        "still owed, and what CSMs answered with the buttons; as healthbeat rules stats counts them.",
        """
WITH sent AS (
    SELECT json_extract(payload, '$.rule') AS rule,
           count(DISTINCT CASE WHEN status IN ('sent', 'confirmed') THEN
               CASE WHEN dedup_key LIKE '%:channel' THEN substr(dedup_key, 1, length(dedup_key) - 8)
                    ELSE dedup_key END END) AS nudges_sent,
           sum(status IN ('pending', 'inflight', 'failed', 'dead')) AS not_delivered,
           max(sent_at) AS last_sent
    FROM outbox WHERE kind = 'slack' AND json_extract(payload, '$.kind') = 'fire'
    GROUP BY 1),
votes AS (
    SELECT rule, count(DISTINCT dedup_key) AS nudges_answered, sum(verdict = 'useful') AS useful,
           sum(verdict = 'not_useful') AS not_useful, sum(verdict = 'score_wrong') AS score_wrong
    FROM feedback GROUP BY rule),
rules AS (SELECT rule FROM sent UNION SELECT rule FROM votes)
SELECT r.rule, coalesce(s.nudges_sent, 0) AS nudges_sent, coalesce(s.not_delivered, 0) AS not_delivered,
       coalesce(v.nudges_answered, 0) AS nudges_answered, coalesce(v.useful, 0) AS useful,
       coalesce(v.not_useful, 0) AS not_useful, coalesce(v.score_wrong, 0) AS score_wrong,
       CASE WHEN v.useful + v.not_useful > 0
            THEN round(100.0 * v.useful / (v.useful + v.not_useful)) END AS useful_percent,
       s.last_sent
FROM rules r LEFT JOIN sent s ON s.rule = r.rule LEFT JOIN votes v ON v.rule = r.rule
ORDER BY nudges_sent DESC, r.rule"""),
    "quarantine_by_source": Query(
        "Quarantine by source",
        "Records refused by validation, counted per source and stream, with the newest reason.",
        """
SELECT source, stream, count(*) AS records, min(seen_at) AS first_seen, max(seen_at) AS last_seen,
       reason AS newest_reason
FROM quarantine
GROUP BY source, stream
ORDER BY last_seen DESC, records DESC"""),
    "last_cycles": Query(
        "The last cycles",
        "The 50 latest cycles, newest first: status, length, and what each stage did.",
        """
SELECT id, started_at, status,
       round(json_extract(summary, '$.seconds'), 1) AS seconds,
       (SELECT sum(value) FROM json_each(summary, '$.sync.records')) AS records_synced,
       json_extract(summary, '$.sync.quarantined') AS quarantined,
       json_extract(summary, '$.scoring.scored') AS scored,
       json_extract(summary, '$.alerts.fired') AS alerts_fired,
       json_extract(summary, '$.writeback.sent') AS written_back,
       json_extract(summary, '$.notify.sent') AS nudges_sent,
       json_extract(summary, '$.error') AS error
FROM cycles
ORDER BY id DESC
LIMIT 50"""),
}


def metadata() -> dict[str, Any]:
    """Datasette's metadata for the store: the index and database pages list every visible table and view
    with its description (Datasette's own pages list names only), each table page describes its columns."""
    catalogue = _catalogue_html()
    return {
        "title": "Healthbeat",
        "description_html": catalogue,
        "databases": {DATABASE: {
            "description_html": catalogue,
            "tables": {name: table.metadata() for name, table in TABLES.items()},
            "queries": {name: query.metadata() for name, query in QUERIES.items()},
        }},
    }


def _catalogue_html() -> str:
    def link(path: str, text: str) -> str:
        return f'<a href="/{DATABASE}/{html.escape(path)}">{html.escape(text)}</a>'

    queries = "".join(f"<li>{link(name, q.title)}: {html.escape(q.description)}</li>" for name, q in QUERIES.items())
    rows = "".join(f"<tr><td>{link(name, name)}</td><td>{html.escape(t.title)}</td>"
                   f"<td>{html.escape(t.description)}</td></tr>"
                   for name, t in TABLES.items() if not t.hidden)
    return ("<p>The Healthbeat store, read-only: what the worker synced, scored, sent and was told. "
            "Refreshing a page shows the worker's latest commits.</p>"
            f'<h3>Questions</h3><ul class="bullets">{queries}</ul>'
            f'<h3>Tables and views</h3><table class="healthbeat-catalogue"><thead><tr><th>table or view</th>'
            f"<th>name</th><th>what it holds</th></tr></thead><tbody>{rows}</tbody></table>")
