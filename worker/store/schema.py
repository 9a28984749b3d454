"""The store's schema as an ordered list of migrations, applied once each, in order, when a store opens.

Tables are named for people who open the file with `sqlite3` or Datasette; the views at the end answer the
common questions without reading the code.
"""

from __future__ import annotations

# Each migration is applied once, in order, inside a transaction; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        source TEXT NOT NULL, source_id TEXT NOT NULL, name TEXT, email TEXT, role TEXT,
        timezone TEXT, is_active INTEGER NOT NULL DEFAULT 1, modstamp TEXT,
        PRIMARY KEY (source, source_id));
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT, industry TEXT, website TEXT, owner_id TEXT,
        annual_revenue REAL, contracted_seats REAL, override_value REAL, override_reason TEXT,
        override_until TEXT, is_deleted INTEGER NOT NULL DEFAULT 0, merged_into TEXT, modstamp TEXT);
    CREATE TABLE opportunities (
        id TEXT PRIMARY KEY, account_id TEXT, name TEXT, type TEXT, stage TEXT, amount REAL,
        close_date TEXT, is_closed INTEGER, is_won INTEGER, is_deleted INTEGER NOT NULL DEFAULT 0,
        modstamp TEXT);
    CREATE INDEX opportunities_account ON opportunities (account_id);
    CREATE TABLE activities (
        source TEXT NOT NULL, source_id TEXT NOT NULL, kind TEXT NOT NULL, account_id TEXT,
        related_id TEXT, parent_id TEXT, occurred_at TEXT NOT NULL, direction TEXT, subject TEXT,
        text TEXT, text_hash TEXT, sentiment REAL, status TEXT, priority TEXT, closed_at TEXT,
        is_deleted INTEGER NOT NULL DEFAULT 0, modstamp TEXT,
        PRIMARY KEY (source, source_id));
    CREATE INDEX activities_account ON activities (account_id, kind, occurred_at);
    CREATE INDEX activities_related ON activities (related_id) WHERE account_id IS NULL;
    CREATE TABLE zendesk_organizations (
        id INTEGER PRIMARY KEY, name TEXT, external_id TEXT, domains TEXT, account_id TEXT,
        mapped_by TEXT);
    CREATE TABLE usage_daily (
        account_id TEXT NOT NULL, day TEXT NOT NULL, active_users INTEGER NOT NULL,
        events INTEGER NOT NULL, features_used TEXT NOT NULL, seats INTEGER, source_file TEXT,
        PRIMARY KEY (account_id, day));
    CREATE TABLE sentiment_cache (
        text_hash TEXT NOT NULL, model TEXT NOT NULL, compound REAL NOT NULL,
        PRIMARY KEY (text_hash, model));
    CREATE TABLE sync_state (
        stream TEXT PRIMARY KEY, cursor TEXT, records INTEGER NOT NULL DEFAULT 0, updated_at TEXT);
    CREATE TABLE scores (
        account_id TEXT PRIMARY KEY, score REAL, band TEXT, computed_score REAL, trend TEXT,
        trend_delta REAL, reason TEXT, coverage REAL, churn_risk REAL, expansion_readiness REAL,
        confidence TEXT, overridden INTEGER NOT NULL DEFAULT 0, measures TEXT, segment TEXT,
        scorecard_hash TEXT, scored_at TEXT);
    CREATE TABLE score_history (
        account_id TEXT NOT NULL, day TEXT NOT NULL, score REAL, band TEXT, churn_risk REAL,
        expansion_readiness REAL, coverage REAL, scored_at TEXT,
        PRIMARY KEY (account_id, day));
    CREATE TABLE alerts (
        rule TEXT NOT NULL, account_id TEXT NOT NULL, state TEXT NOT NULL, since TEXT,
        pending_cycles INTEGER NOT NULL DEFAULT 0, episode INTEGER NOT NULL DEFAULT 0,
        last_notified_at TEXT, rule_hash TEXT, updated_at TEXT,
        PRIMARY KEY (rule, account_id));
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT, dedup_key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
        account_id TEXT, payload TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, remote_ref TEXT, created_at TEXT NOT NULL,
        sent_at TEXT);
    CREATE INDEX outbox_status ON outbox (kind, status);
    CREATE TABLE writeback_state (
        account_id TEXT PRIMARY KEY, fields TEXT NOT NULL, written_at TEXT NOT NULL);
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, stream TEXT NOT NULL,
        source_id TEXT, reason TEXT NOT NULL, raw TEXT, seen_at TEXT NOT NULL);
    CREATE TABLE cycles (
        id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT NOT NULL, finished_at TEXT,
        status TEXT NOT NULL, summary TEXT);
    CREATE VIEW account_health AS
        SELECT a.id AS account_id, a.name, u.name AS owner, s.score, s.band, s.trend, s.reason,
               s.coverage, s.churn_risk, s.expansion_readiness, s.overridden, s.scored_at
        FROM accounts a LEFT JOIN scores s ON s.account_id = a.id
        LEFT JOIN users u ON u.source = 'salesforce' AND u.source_id = a.owner_id
        WHERE a.is_deleted = 0;
    CREATE VIEW open_alerts AS
        SELECT al.rule, al.account_id, a.name, al.state, al.since, al.episode, al.last_notified_at
        FROM alerts al JOIN accounts a ON a.id = al.account_id
        WHERE al.state IN ('pending', 'firing');
    CREATE VIEW pending_outbox AS
        SELECT id, kind, account_id, status, attempts, last_error, created_at FROM outbox
        WHERE status NOT IN ('sent', 'confirmed');
    """,
    """
    CREATE TABLE overrides (
        account_id TEXT PRIMARY KEY, value REAL NOT NULL, reason TEXT NOT NULL, until TEXT,
        set_by TEXT, set_at TEXT NOT NULL);
    """,
    """
    ALTER TABLE outbox ADD COLUMN not_before TEXT;
    ALTER TABLE outbox ADD COLUMN batch_key TEXT;
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT, account_id TEXT, owner TEXT, until TEXT NOT NULL,
        reason TEXT NOT NULL, created_by TEXT, created_at TEXT NOT NULL);
    DROP VIEW pending_outbox;
    CREATE VIEW pending_outbox AS
        SELECT id, kind, account_id, status, attempts, last_error, not_before, created_at FROM outbox
        WHERE status IN ('pending', 'inflight', 'failed', 'dead');
    """,
    """
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT, dedup_key TEXT NOT NULL, user_id TEXT NOT NULL,
        axis TEXT NOT NULL, verdict TEXT NOT NULL, rule TEXT NOT NULL, account_id TEXT NOT NULL,
        episode INTEGER NOT NULL, kind TEXT NOT NULL, user_name TEXT, channel_id TEXT, message_ts TEXT,
        action_ts TEXT, reason TEXT, proposed_value REAL, proposed_until TEXT, override_status TEXT,
        decided_by TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        UNIQUE (dedup_key, user_id, axis));
    CREATE INDEX feedback_rule ON feedback (rule, verdict);
    CREATE INDEX feedback_account ON feedback (account_id);
    CREATE TABLE feedback_messages (
        channel_id TEXT NOT NULL, message_ts TEXT NOT NULL, text TEXT NOT NULL, blocks TEXT NOT NULL,
        seen_at TEXT NOT NULL, PRIMARY KEY (channel_id, message_ts));
    """,
    # Work left for a later stage, per account, marked by triggers whatever path wrote: 'score' when the
    # data a score is made of changed (sync, sentiment, remapping, retention, the CLI, Slack buttons);
    # 'evaluate' and 'writeback' when a score row changed (the time it was computed apart). A stage reads
    # its marks, does the work and deletes exactly the marks it read in the same transaction as its
    # results, so a crash re-does the work and a change made meanwhile survives. `effective_at` is '' for
    # "now", or the time a future-dated activity (a scheduled meeting) starts to count. `version` grows
    # when a mark is made again, for the tables written beside a running cycle (overrides, from Slack
    # buttons); the hot tables do nothing on conflict (a trigger doing an upsert per activity costs much more
    # during a backfill, and only the cycle itself writes them).
    # `activities_unscored` holds the texts still waiting for a sentiment, in rowid order, so a cycle finds
    # the few new ones without reading the whole table.
    """
    CREATE TABLE account_changes (
        stage TEXT NOT NULL, account_id TEXT NOT NULL, effective_at TEXT NOT NULL DEFAULT '',
        version INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (stage, account_id, effective_at)) WITHOUT ROWID;
    CREATE INDEX activities_unscored ON activities (sentiment) WHERE sentiment IS NULL AND text IS NOT NULL
        AND text != '';
    CREATE TRIGGER activities_marked_on_insert AFTER INSERT ON activities WHEN NEW.account_id IS NOT NULL
    BEGIN
        INSERT INTO account_changes (stage, account_id, effective_at) VALUES ('score', NEW.account_id,
            CASE WHEN NEW.occurred_at > coalesce(NEW.modstamp, NEW.occurred_at) THEN NEW.occurred_at ELSE '' END)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER activities_marked_on_update AFTER UPDATE ON activities
    WHEN OLD.account_id IS NOT NEW.account_id OR OLD.kind IS NOT NEW.kind OR OLD.occurred_at IS NOT NEW.occurred_at
        OR OLD.direction IS NOT NEW.direction OR OLD.sentiment IS NOT NEW.sentiment OR OLD.status IS NOT NEW.status
        OR OLD.priority IS NOT NEW.priority OR OLD.closed_at IS NOT NEW.closed_at
        OR OLD.is_deleted IS NOT NEW.is_deleted
    BEGIN
        INSERT INTO account_changes (stage, account_id)
            SELECT 'score', OLD.account_id WHERE OLD.account_id IS NOT NULL
            ON CONFLICT DO NOTHING;
        INSERT INTO account_changes (stage, account_id, effective_at)
            SELECT 'score', NEW.account_id,
                   CASE WHEN NEW.occurred_at > coalesce(NEW.modstamp, NEW.occurred_at) THEN NEW.occurred_at ELSE '' END
            WHERE NEW.account_id IS NOT NULL
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER activities_marked_on_delete AFTER DELETE ON activities WHEN OLD.account_id IS NOT NULL
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', OLD.account_id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER usage_marked_on_insert AFTER INSERT ON usage_daily
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.account_id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER usage_marked_on_update AFTER UPDATE ON usage_daily
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', OLD.account_id)
            ON CONFLICT DO NOTHING;
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.account_id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER usage_marked_on_delete AFTER DELETE ON usage_daily
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', OLD.account_id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER accounts_marked_on_insert AFTER INSERT ON accounts
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER accounts_marked_on_update AFTER UPDATE ON accounts
    WHEN OLD.type IS NOT NEW.type OR OLD.industry IS NOT NEW.industry
        OR OLD.contracted_seats IS NOT NEW.contracted_seats OR OLD.override_value IS NOT NEW.override_value
        OR OLD.override_reason IS NOT NEW.override_reason OR OLD.override_until IS NOT NEW.override_until
        OR OLD.is_deleted IS NOT NEW.is_deleted
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER opportunities_marked_on_insert AFTER INSERT ON opportunities WHEN NEW.account_id IS NOT NULL
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.account_id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER opportunities_marked_on_update AFTER UPDATE ON opportunities
    WHEN OLD.account_id IS NOT NEW.account_id OR OLD.amount IS NOT NEW.amount
        OR OLD.close_date IS NOT NEW.close_date OR OLD.is_closed IS NOT NEW.is_closed
        OR OLD.is_won IS NOT NEW.is_won OR OLD.is_deleted IS NOT NEW.is_deleted
    BEGIN
        INSERT INTO account_changes (stage, account_id)
            SELECT 'score', OLD.account_id WHERE OLD.account_id IS NOT NULL
            ON CONFLICT DO NOTHING;
        INSERT INTO account_changes (stage, account_id)
            SELECT 'score', NEW.account_id WHERE NEW.account_id IS NOT NULL
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER opportunities_marked_on_delete AFTER DELETE ON opportunities WHEN OLD.account_id IS NOT NULL
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', OLD.account_id)
            ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER scores_marked_on_insert AFTER INSERT ON scores
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('evaluate', NEW.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
        INSERT INTO account_changes (stage, account_id) VALUES ('writeback', NEW.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
    END;
    CREATE TRIGGER scores_marked_on_update AFTER UPDATE ON scores
    WHEN OLD.score IS NOT NEW.score OR OLD.band IS NOT NEW.band OR OLD.computed_score IS NOT NEW.computed_score
        OR OLD.trend IS NOT NEW.trend OR OLD.trend_delta IS NOT NEW.trend_delta OR OLD.reason IS NOT NEW.reason
        OR OLD.coverage IS NOT NEW.coverage OR OLD.churn_risk IS NOT NEW.churn_risk
        OR OLD.expansion_readiness IS NOT NEW.expansion_readiness OR OLD.confidence IS NOT NEW.confidence
        OR OLD.overridden IS NOT NEW.overridden OR OLD.measures IS NOT NEW.measures OR OLD.segment IS NOT NEW.segment
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('evaluate', NEW.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
        INSERT INTO account_changes (stage, account_id) VALUES ('writeback', NEW.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
    END;
    CREATE TRIGGER overrides_marked_on_insert AFTER INSERT ON overrides
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
    END;
    CREATE TRIGGER overrides_marked_on_update AFTER UPDATE ON overrides
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', NEW.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
    END;
    CREATE TRIGGER overrides_marked_on_delete AFTER DELETE ON overrides
    BEGIN
        INSERT INTO account_changes (stage, account_id) VALUES ('score', OLD.account_id)
            ON CONFLICT DO UPDATE SET version = version + 1;
    END;
    """,
    # Every activity measure asks for live rows (`is_deleted = 0`) and the email ones for a direction: with
    # both in the account index, a lookup such as "the first reply after this email" walks the index alone
    # instead of reading each candidate row from the table, and a whole re-score costs less CPU. Each entry
    # grows by a few bytes, and neither column changes after the insert but on a delete. Sentiment stays out:
    # it is written after the insert, and moving the entry of every text scored made storing a sentiment
    # several times dearer for a small gain in scoring (measured: BENCHMARKS.md, 'Figures behind the code').
    """
    DROP INDEX activities_account;
    CREATE INDEX activities_account ON activities (account_id, kind, occurred_at, is_deleted, direction);
    """,
    # Zendesk comments come from the ticket event export, apart from their tickets: each ticket page points its
    # comments at the ticket's organization and deletion, found by `parent_id` (an index lookup per ticket, not
    # a scan of the table per page). A ticket's `closed_at` is now its true solve time (the metric set's
    # `solved_at`); the tickets stored before held the time an automation closed them, days later, so the
    # ticket export starts once more from the backfill (about a call per thousand tickets; comments are not
    # read again).
    """
    CREATE INDEX activities_parent ON activities (parent_id) WHERE parent_id IS NOT NULL;
    DELETE FROM sync_state WHERE stream = 'zendesk.tickets';
    """,
    # When each opportunity was created in the CRM (`CreatedDate`), so that a backtest or a churn model's fit
    # sees a renewal only from the day it existed: a renewal opened two months before its close was unknown a
    # year before, and reading it then leaks the calendar into the past. The opportunities stored before hold
    # no creation time, so their stream starts once more from the beginning (Opportunities are read whole:
    # a few calls; nothing the score reads changes, so nothing is re-scored).
    """
    ALTER TABLE opportunities ADD COLUMN created_at TEXT;
    DELETE FROM sync_state WHERE stream = 'salesforce.Opportunity';
    """,
    # With a learned churn model in force (`rules/churn_model.yaml`), what drives an account's churn risk: the
    # model's largest terms for it, as JSON (measure, raw value, weight x standardised value, in words), for
    # `healthbeat explain`. NULL while churn risk is the scorecard's rule, whose measures `measures` holds.
    """
    ALTER TABLE scores ADD COLUMN churn_drivers TEXT;
    """,
    # The Slack users who opened Healthbeat's Home tab, each with the Salesforce owner they were found to be (by
    # email) and the bands their tab last showed, so that a cycle republishes only the tabs whose bands changed
    # and never publishes one nobody opened (`worker.delivery.home_tab`).
    """
    CREATE TABLE home_tabs (
        slack_user_id TEXT PRIMARY KEY, owner_id TEXT, opened_at TEXT NOT NULL, published_at TEXT,
        shown TEXT, last_error TEXT);
    """,
    # Two small indexes from which the heaviest activity measures read everything they ask for, where the
    # account index made them read each row from the table: the inbound texts with a sentiment (inbound
    # sentiment and its usual; an entry is added when the text gets its sentiment, never moved), and the
    # tickets with their state (open, urgent and surging tickets, resolution time). A query uses a partial
    # index only when its WHERE repeats the index's own terms: `_INBOUND_TEXT` in `worker.scoring.measures`
    # and `kind = 'ticket'`. Sentiment stays out of the account index (migration 6).
    """
    CREATE INDEX activities_inbound_text ON activities (account_id, occurred_at, sentiment, kind, direction,
        is_deleted) WHERE direction = 'in' AND sentiment IS NOT NULL AND kind IN ('email', 'ticket_comment', 'ticket');
    CREATE INDEX activities_ticket ON activities (account_id, kind, occurred_at, is_deleted, closed_at, status,
        priority) WHERE kind = 'ticket';
    """,
    # The alert states a quiet cycle looks at (`worker.alerting.engine._accounts_in_motion`: pending, or just
    # entered firing or resolved): a seek over those few, where every rule's row of every account was read each
    # cycle. Its WHERE is the query's own, word for word, as SQLite needs to use a partial index.
    """
    CREATE INDEX alerts_in_motion ON alerts (account_id) WHERE state = 'pending'
        OR (since = updated_at AND state IN ('firing', 'resolved'));
    """,
    # Two figures a quiet cycle asks for, each read from a small index where it read every row of its table:
    # the accounts per band it reports (`worker.scoring.engine._bands`; a score's row holds its measures'
    # JSON) and the newest change of an Account, on which the Zendesk mapping depends
    # (`worker.sync.zendesk._mapping_inputs`).
    """
    CREATE INDEX scores_band ON scores (band);
    CREATE INDEX accounts_modstamp ON accounts (modstamp);
    """,
    # An owner's accounts, as a Home tab shows them and a republish compares their bands
    # (`worker.delivery.home_tab.owner_bands`): a seek per opened tab, where each read every account.
    """
    CREATE INDEX accounts_owner ON accounts (owner_id);
    """,
)


# The activities' account index as the latest migration defines it. A first backfill stores its activities
# without it and builds it once at the end (`Store.account_index_deferred`). If the worker dies before that
# end, it is built when the worker opens the store again, or at the end of the next sync.
ACCOUNT_INDEX = ("CREATE INDEX IF NOT EXISTS activities_account "
                 "ON activities (account_id, kind, occurred_at, is_deleted, direction)")
