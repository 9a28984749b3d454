"""`POST /slack/actions`: Slack's interactivity requests for the feedback buttons on every nudge.

The same payloads may come over Socket Mode instead (`worker.service.socket_mode`, with SLACK_APP_TOKEN):
`SlackActions.handle_payload` is what both transports call once a payload is known to be Slack's (the HTTP
route by its signature, Socket Mode by the WebSocket the worker opened with its app-level token).

Slack calls this URL when someone clicks "Useful", "Not useful" or "Score looks wrong" on a nudge
(`block_actions`), and when they submit the "Score looks wrong" modal (`view_submission`). Each request is
checked before anything else: Slack's v0 signature (HMAC-SHA256 of `v0:{timestamp}:{body}` with the signing
secret, compared in constant time) and a timestamp at most five minutes from now, so a captured request
cannot be replayed. A bad, missing or stale signature gets 401 and changes nothing.

Slack gives up after three seconds, so a request only records and answers: the vote is written to the store
(`worker.service.feedback`, idempotent, so a double click or a Slack retry counts once) and the message update
that shows who answered (`chat.update`) runs afterwards on one background thread. The only Slack call made
while Slack waits is `views.open`, because its `trigger_id` expires three seconds after the click.

Request threads never touch the cycle's SQLite connection: this handler has its own (`build_slack_actions`
opens it), used under one lock, with a short busy timeout; if a long cycle transaction holds the database
past it, the answer is 503 and nothing is recorded, and the CSM can click again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.slack.client import SlackClient, SlackError, escape_text
from worker.alerting.message import FEEDBACK_BLOCK, NudgeKey, feedback_block
from worker.clock import Clock, system_clock
from worker.config import Settings
from worker.errors import FeedbackError, NotANudgeKey
from worker.service.feedback import (
    ACTIONS,
    DEFAULT_OVERRIDE_DAYS,
    LABELS,
    Vote,
    other_override_in_force,
    owner_clicked_in_dm,
    receipts_for,
    record_vote,
    remember_message,
    remembered_message,
)
from worker.service.http import Request, Response
from worker.store import Store

__all__ = [
    "ACTIONS",
    "MAX_REQUEST_AGE",
    "MODAL_CALLBACK_ID",
    "InteractiveSlack",
    "SlackActions",
    "build_slack_actions",
    "feedback_block",
    "score_wrong_modal",
    "slack_app_token",
    "verify_signature",
    "with_receipts",
]

log = logging.getLogger(__name__)

RECEIPT_BLOCK: Final = "feedback_seen:"
MODAL_CALLBACK_ID: Final = "healthbeat_score_wrong"
MAX_REQUEST_AGE: Final = 300
"""Seconds a signed request stays acceptable (Slack's advice: five minutes), either side of now."""
OVERRIDE_DAYS: Final = (7, 14, 30)
BUSY_TIMEOUT_MS: Final = 2000
"""How long a click waits for a cycle's write transaction: under Slack's three seconds, with room to answer."""
_SLACK_USER: Final = re.compile(r"^[UW][A-Z0-9]{2,}$")
SQLITE_MAX_INTEGER: Final = 2**63 - 1


# -- verification -----------------------------------------------------------------------------------------

def verify_signature(signing_secret: str, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
    """Why this request is not Slack's (missing, stale or wrong signature), or None when it is.

    `headers` have lower-case names. The timestamp is checked first so that an old request is refused
    even when its signature is right: that is what makes a captured request useless to replay.
    """
    timestamp = headers.get("x-slack-request-timestamp", "")
    signature = headers.get("x-slack-signature", "")
    if not timestamp or not signature:
        return "no X-Slack-Signature or X-Slack-Request-Timestamp header"
    try:
        sent = int(timestamp)
    except ValueError:
        return f"malformed X-Slack-Request-Timestamp {timestamp[:20]!r}"
    if abs(now - sent) > MAX_REQUEST_AGE:
        return f"timestamp {sent} is {round(now - sent)} s from now, more than {MAX_REQUEST_AGE} s (a replay?)"
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return "signature does not match (wrong SLACK_SIGNING_SECRET, or the body was altered)"
    return None


def refusal(secret: str | None, request: Request, now: float, route: str) -> Response | None:
    """The 401 for a request to `route` that is not Slack's (or when no signing secret is set: nothing can be
    verified), logged; None when the request is Slack's."""
    if secret is None:
        return Response.json(401, {"error": "not_configured", "detail": "SLACK_SIGNING_SECRET is not set"})
    problem = verify_signature(secret, request.headers, request.body, now)
    if problem is not None:
        log.warning("%s: refused a request: %s", route, problem)
        return Response.json(401, {"error": "invalid_signature"})
    return None


# -- the modal and the receipts -----------------------------------------------------------------------------

def _option(days: int) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": f"{days} days"}, "value": str(days)}


def score_wrong_modal(nudge: NudgeKey, account: Mapping[str, Any], channel: str | None, ts: str | None, *,
                      applies: bool) -> dict[str, Any]:
    """The "Score looks wrong" modal: why, what it should be (optional), and for how long.

    `private_metadata` carries the nudge key and its message, which Slack hands back on submission.
    `applies` says in the modal what a value will do (pin at once, or wait for a confirmation).
    """
    score = account.get("score")
    facts = (f"*{escape_text(str(account.get('name') or nudge.account_id))}* has health "
             f"*{'-' if score is None else round(float(score))}* ({escape_text(str(account.get('band') or '?'))}), "
             f"from rule `{nudge.rule}`. What is wrong with it?")
    effect = ("You own this account: a score you give pins it from the next cycle until the end of the term "
              "you pick. It shows as pinned, with your reason, and expires by itself." if applies else
              "A score you give is kept as a proposal for the account's owner or ops to confirm "
              "(`healthbeat feedback accept`); it expires by itself.")
    return {
        "type": "modal", "callback_id": MODAL_CALLBACK_ID,
        "private_metadata": json.dumps({"key": nudge.dedup_key, "channel": channel, "ts": ts}),
        "title": {"type": "plain_text", "text": "Score looks wrong"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "block_id": "about", "text": {"type": "mrkdwn", "text": facts[:3000]}},
            {"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why does it look wrong?"},
             "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True, "max_length": 500}},
            {"type": "input", "block_id": "value", "optional": True,
             "label": {"type": "plain_text", "text": "What should the score be? (0-100)"},
             "element": {"type": "number_input", "action_id": "value", "is_decimal_allowed": False,
                         "min_value": "0", "max_value": "100"}},
            {"type": "input", "block_id": "until", "label": {"type": "plain_text", "text": "Pin it for"},
             "element": {"type": "static_select", "action_id": "until",
                         "initial_option": _option(DEFAULT_OVERRIDE_DAYS),
                         "options": [_option(days) for days in OVERRIDE_DAYS]}},
            {"type": "context", "block_id": "effect", "elements": [{"type": "mrkdwn", "text": effect}]},
        ],
    }


def _who(row: Mapping[str, Any]) -> str:
    user_id = str(row["user_id"])
    return f"<@{user_id}>" if _SLACK_USER.match(user_id) else escape_text(str(row["user_name"] or user_id))


def receipt_text(rows: list[dict[str, Any]]) -> str:
    """"Feedback received: Useful — <@U1> · Score looks wrong — <@U2> (says 65 until 2024-07-01, applied)"."""
    parts = []
    for verdict in ("useful", "not_useful", "score_wrong"):
        people = []
        for row in (r for r in rows if r["verdict"] == verdict):
            note = ""
            if row["proposed_value"] is not None:
                note = (f" (says {row['proposed_value']:g} until {row['proposed_until']}, "
                        f"{'proposed' if row['override_status'] == 'proposed' else 'pinned'})")
            people.append(_who(row) + note)
        if people:
            parts.append(f"{LABELS[verdict]}: {', '.join(people)}")
    return (":memo: Feedback received · " + " · ".join(parts))[:3000]


def _feedback_key(block: Mapping[str, Any]) -> str | None:
    """The nudge key on a feedback block's buttons; the blocks come from Slack, so any shape is possible."""
    if block.get("type") != "actions" or not str(block.get("block_id") or "").startswith(FEEDBACK_BLOCK):
        return None
    elements = block.get("elements")
    return next((str(e["value"]) for e in (elements if isinstance(elements, list) else [])
                 if isinstance(e, dict) and e.get("action_id") in ACTIONS and e.get("value")), None)


def with_receipts(blocks: list[dict[str, Any]], receipts: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The message's blocks with a receipt after each feedback block that has answers.

    A divider right after the buttons gives way to the receipt, so a full digest stays within Slack's 50 blocks.
    """
    original = [b for b in blocks if not str(b.get("block_id") or "").startswith(RECEIPT_BLOCK)]
    out: list[dict[str, Any]] = []
    skip_divider = False
    for block in original:
        if skip_divider and block.get("type") == "divider":
            skip_divider = False
            continue
        skip_divider = False
        out.append(block)
        key = _feedback_key(block)
        if key is not None and receipts.get(key):
            out.append({"type": "context", "block_id": (RECEIPT_BLOCK + key)[:255],
                        "elements": [{"type": "mrkdwn", "text": receipt_text(receipts[key])}]})
            skip_divider = True
    return out[:50]


# -- Slack calls --------------------------------------------------------------------------------------------

class InteractiveSlack(SlackClient):
    """`SlackClient` plus `views.open`, which only this handler needs (candidate to move into the client)."""

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> str:
        """Open a modal for the user whose click gave `trigger_id` (valid once, for three seconds)."""
        response = self._call("views.open", self._web.views_open, trigger_id=trigger_id, view=view)
        return str((response.get("view") or {}).get("id") or "")


# -- what Slack sends ---------------------------------------------------------------------------------------
# Only the fields read here, each with its type: a payload of another shape is a 400 naming the field, never
# an error deep in the handler. Absent or null parts read as empty, as Slack leaves out what does not apply
# (no `channel` for a click in a modal); whatever else Slack sends is ignored.

class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _User(_Part):
    id: str = Field(min_length=1)
    username: str | None = None
    name: str | None = None


class _Action(_Part):
    action_id: str | None = None
    value: str | None = None
    action_ts: str | None = None


class _Container(_Part):
    channel_id: str | None = None
    message_ts: str | None = None


class _Channel(_Part):
    id: str | None = None


class _Message(_Part):
    ts: str | None = None
    text: str | None = None
    blocks: list[dict[str, Any]] | None = None


class _BlockActions(_Part):
    user: _User
    actions: list[_Action] | None = None
    container: _Container | None = None
    channel: _Channel | None = None
    message: _Message | None = None
    trigger_id: str | None = None


class _View(_Part):
    callback_id: str | None = None
    private_metadata: str | None = None
    state: dict[str, Any] | None = None


class _ViewSubmission(_Part):
    user: _User
    view: _View | None = None


class _Option(_Part):
    value: str | None = None


class _Input(_Part):
    value: str | None = None
    selected_option: _Option | None = None


class _ModalState(_Part):
    """Our modal's `view.state`: block_id → action_id → the input's state."""

    values: dict[str, dict[str, _Input]] | None = None


class _ModalMetadata(_Part):
    """What `score_wrong_modal` put in `private_metadata`, handed back on submission."""

    key: str = ""
    channel: str | None = None
    ts: str | None = None


class _BadRequest(Exception):
    pass


_P = TypeVar("_P", bound=_Part)


def _parsed(model: type[_P], data: Any, what: str) -> _P:
    """`data` (a JSON text when it is a str) as `model`, or a bad request naming the first wrong field."""
    try:
        return model.model_validate_json(data) if isinstance(data, str) else model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise _BadRequest(f"{what}{'.' + where if where else ''}: {error['msg']}") from None


def _nudge(text: str) -> NudgeKey | None:
    """The nudge a button names, or None when the value is not one of ours."""
    try:
        nudge = NudgeKey.parse(text)
    except (NotANudgeKey, ValueError) as exc:  # ValueError: an episode of thousands of digits
        log.warning("slack actions: a feedback button with %s; ignored", exc)
        return None
    if nudge.episode > SQLITE_MAX_INTEGER:
        log.warning("slack actions: a feedback button with episode %.40s...; ignored", nudge.episode)
        return None
    return nudge


# -- the handler --------------------------------------------------------------------------------------------

class AfterTheAnswer:
    """One background thread for what a Slack route does after answering (Slack gives up at three seconds):
    updating a message, publishing a Home tab. `flush` waits for what was handed over so far (tests, shutdown)."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending: list[Future[None]] = []

    def submit(self, work: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(self._executor.submit(work, *args))

    def flush(self, timeout: float) -> None:
        with self._lock:
            pending = list(self._pending)
        wait(pending, timeout=timeout)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


def slack_app_token(settings: Settings) -> str | None:
    """SLACK_APP_TOKEN when it is set to something (blank is unset, as in .env.example): Socket Mode is on."""
    token = settings.slack_app_token.get_secret_value().strip() if settings.slack_app_token else ""
    return token or None


def slack_credentials(settings: Settings) -> tuple[str | None, str | None]:
    """The bot token (None while Slack is not configured) and the signing secret, as the Slack routes use them."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_configured and settings.slack_bot_token \
        else None
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    return token, secret


class SlackActions:
    """The `/slack/actions` route: `server.routes.add("POST", "/slack/actions", actions.handle)`.

    `store` must be a connection of its own (request threads run beside the cycle). `interactive` opens
    modals from request threads; `updater` updates messages from the one background thread; either may be
    None when Slack is not configured (votes are still recorded). `clock` dates votes and overrides (the
    worker's clock); `epoch` checks signatures against real time, as Slack signs with it.
    """

    def __init__(self, store: Store, *, signing_secret: str | None, interactive: InteractiveSlack | None = None,
                 updater: SlackClient | None = None, clock: Clock = system_clock,
                 epoch: Callable[[], float] = time.time, owns_store: bool = False, over_socket: bool = False) -> None:
        self.store = store
        self._secret = signing_secret or None
        self._interactive = interactive
        self._updater = updater
        self._clock = clock
        self._epoch = epoch
        self._owns_store = owns_store
        self._lock = threading.Lock()
        self._slack_lock = threading.Lock()
        self._background = AfterTheAnswer("slack-actions")
        store.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if self._secret is None and not over_socket:  # over Socket Mode, nothing needs the secret
            log.warning("SLACK_SIGNING_SECRET is not set: /slack/actions refuses every request (401), so the "
                        "feedback buttons on nudges do nothing")

    # -- the route ----------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        refused = refusal(self._secret, request, self._epoch(), "slack actions")
        if refused is not None:
            return refused
        retry = request.headers.get("x-slack-retry-num")
        if retry:
            log.info("slack actions: Slack retry #%s (%s)", retry, request.headers.get("x-slack-retry-reason", "?"))
        try:
            payload = _payload(request)
        except _BadRequest as exc:
            log.warning("slack actions: bad request: %s", exc)
            return Response.json(400, {"error": "bad_request", "detail": str(exc)})
        return self.handle_payload(payload)

    def handle_payload(self, payload: Mapping[str, Any]) -> Response:
        """One interaction payload known to be Slack's, however it came; the answer is what Slack is told (an
        HTTP answer, or a Socket Mode acknowledgement and its payload). A 503 means nothing was recorded."""
        try:
            _check_text(payload)
            kind = payload.get("type")
            if kind == "block_actions":
                return self._block_actions(payload)
            if kind == "view_submission":
                return self._view_submission(payload)
            return Response(200)  # view_closed, shortcuts...: nothing of ours
        except _BadRequest as exc:
            log.warning("slack actions: bad request: %s", exc)
            return Response.json(400, {"error": "bad_request", "detail": str(exc)})
        except FeedbackError as exc:  # a well-formed click the feedback rules refuse (a nudge never sent...)
            log.warning("slack actions: not recorded: %s", exc)
            return Response.json(422, {"error": "not_recorded", "detail": str(exc)})
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            log.error("slack actions: the store is busy (%s); nothing recorded, Slack shows the click failed", exc)
            return Response.json(503, {"error": "busy"})

    def _block_actions(self, payload: Mapping[str, Any]) -> Response:
        click = _parsed(_BlockActions, payload, "block_actions")
        user = _user(click.user)
        action = next((a for a in click.actions or [] if a.action_id in ACTIONS), None)
        if action is None or action.action_id is None:
            return Response(200)  # "Open in Salesforce" and other link buttons report their clicks too
        nudge = _nudge(action.value or "")
        if nudge is None:
            return Response(200)
        container = click.container or _Container()
        message = click.message or _Message()
        channel = (click.channel.id if click.channel else None) or container.channel_id
        ts = container.message_ts or message.ts
        verdict = ACTIONS[action.action_id]
        now = self._clock()
        with self._lock:
            if channel and ts and message.blocks:
                remember_message(self.store, channel, ts, message.text or "", message.blocks, now)
            view = self._modal(nudge, user, channel, ts, now) if verdict == "score_wrong" else None
        if view is not None:  # the answer comes with the modal's submission
            self._open_modal(click.trigger_id or "", view, nudge)
            return Response(200)
        vote = Vote(nudge, verdict, user[0], user[1], channel, ts, action.action_ts)
        with self._lock:
            recorded = record_vote(self.store, vote, now)
        log.info("slack actions: %s on %s by %s%s", vote.verdict, nudge.dedup_key, user[1] or user[0],
                 "" if recorded.changed else " (already recorded)")
        if recorded.changed and channel and ts:
            self._schedule_update(channel, ts)
        return Response(200)

    def _modal(self, nudge: NudgeKey, user: tuple[str, str | None], channel: str | None, ts: str | None,
               now: datetime) -> dict[str, Any]:
        """The modal for this click, saying whether a value will apply at once (store lock held)."""
        rows = self.store.query("SELECT a.name, s.score, s.band FROM accounts a LEFT JOIN scores s "
                                "ON s.account_id = a.id WHERE a.id = ?", (nudge.account_id,))
        probe = Vote(nudge, "score_wrong", user[0], user[1], channel, ts)
        applies = owner_clicked_in_dm(self.store, probe) and \
            other_override_in_force(self.store, nudge.account_id, probe.setter, now.date()) is None
        return score_wrong_modal(nudge, rows[0] if rows else {}, channel, ts, applies=applies)

    def _open_modal(self, trigger: str, view: dict[str, Any], nudge: NudgeKey) -> None:
        """`views.open` while Slack waits: its trigger_id is only good for three seconds after the click."""
        if self._interactive is None or not trigger:
            log.warning("slack actions: cannot open the 'score looks wrong' modal (%s)",
                        "SLACK_BOT_TOKEN is not set" if trigger else "the click carried no trigger_id")
            return
        try:
            with self._slack_lock:
                self._interactive.open_view(trigger, view)
        except SlackError as exc:
            log.warning("slack actions: could not open the modal for %s: %s", nudge.dedup_key, exc)

    def _view_submission(self, payload: Mapping[str, Any]) -> Response:
        submission = _parsed(_ViewSubmission, payload, "view_submission")
        view = submission.view or _View()
        if view.callback_id != MODAL_CALLBACK_ID:
            return Response(200)
        user = _user(submission.user)
        meta = _parsed(_ModalMetadata, view.private_metadata or "{}", "view_submission.view.private_metadata")
        nudge = _nudge(meta.key)
        if nudge is None:
            raise _BadRequest(f"modal without its nudge: {meta.key[:200]!r}")
        values = _parsed(_ModalState, view.state or {}, "view_submission.view.state").values or {}
        reason = (_input(values, "reason").value or "").strip()
        errors: dict[str, str] = {}
        if not reason:
            errors["reason"] = "Say why, in a few words: it is shown with the score."
        score: float | None = None
        raw = _input(values, "value").value
        if raw:
            try:
                score = float(raw)
            except ValueError:
                score = -1.0
            if not 0 <= score <= 100:
                errors["value"] = "A score from 0 to 100, or leave it empty."
        if errors:
            return Response.json(200, {"response_action": "errors", "errors": errors})
        option = _input(values, "until").selected_option
        days = _days(option.value if option else None)
        now = self._clock()
        channel, ts = meta.channel, meta.ts
        vote = Vote(nudge, "score_wrong", user[0], user[1], channel, ts, None, reason, score,
                    (now.date() + timedelta(days=days)) if score is not None else None)
        with self._lock:
            recorded = record_vote(self.store, vote, now)
        log.info("slack actions: score looks wrong on %s by %s%s", nudge.dedup_key, user[1] or user[0],
                 f": {score:g} {recorded.override} ({recorded.why})" if recorded.override else "")
        if recorded.changed and channel and ts:
            self._schedule_update(str(channel), str(ts))
        return Response(200)  # an empty 200 closes the modal

    # -- the message update, after the answer ---------------------------------------------------------------

    def _schedule_update(self, channel: str, ts: str) -> None:
        if self._updater is None:
            return
        self._background.submit(self._update_message, channel, ts)

    def _update_message(self, channel: str, ts: str) -> None:
        """Redraw the receipts from the store: whatever order updates run in, the last one is right."""
        assert self._updater is not None
        try:
            with self._lock:
                remembered = remembered_message(self.store, channel, ts)
                if remembered is None:
                    return
                text, blocks = remembered
                keys = [k for k in (_feedback_key(b) for b in blocks) if k]
                receipts = receipts_for(self.store, keys)
            self._updater.update(channel, ts, text=text, blocks=with_receipts(blocks, receipts))
        except SlackError as exc:
            log.warning("slack actions: could not show the feedback on message %s in %s: %s", ts, channel, exc)
        except Exception:
            log.exception("slack actions: updating message %s in %s failed", ts, channel)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for the message updates scheduled so far (tests; shutdown)."""
        self._background.flush(timeout)

    def close(self) -> None:
        self._background.shutdown()
        if self._owns_store:
            self.store.close()


def _payload(request: Request) -> dict[str, Any]:
    """The JSON object in the form body's `payload` field, as Slack sends interactions."""
    try:
        form = parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, KeyError, IndexError, ValueError, RecursionError):
        raise _BadRequest("expected a form body with a JSON `payload` field") from None
    if not isinstance(payload, dict):
        raise _BadRequest("the payload is not a JSON object")
    return payload


def _check_text(payload: Mapping[str, Any]) -> None:
    """JSON may escape a lone surrogate (\\ud800), which no UTF-8 text column can hold: refused, whatever the
    transport."""
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        raise _BadRequest("the payload holds text that is not valid Unicode") from None


def _user(user: _User) -> tuple[str, str | None]:
    return user.id, (user.username or user.name or None)


def _input(values: Mapping[str, Mapping[str, _Input]], block_id: str) -> _Input:
    """The state of the modal input `block_id` (its one element, whose action_id is the same name)."""
    block = values.get(block_id) or {}
    return block.get(block_id) or next(iter(block.values()), None) or _Input()


def _days(value: object) -> int:
    try:
        days = int(str(value))
    except ValueError:
        return DEFAULT_OVERRIDE_DAYS
    return days if days in OVERRIDE_DAYS else DEFAULT_OVERRIDE_DAYS


def build_slack_actions(settings: Settings, *, clock: Clock = system_clock) -> SlackActions:
    """The handler as the scheduler runs it: its own store connection, and Slack clients of its own.

    `views.open` gets a short timeout and no retries (its trigger expires in three seconds); message
    updates, off the request path, get the usual retries.
    """
    token, secret = slack_credentials(settings)
    interactive = (InteractiveSlack(token, base_url=settings.slack_api_url, timeout=2, max_retries=0,
                                    ca_bundle=settings.ca_bundle) if token else None)
    updater = (SlackClient(token, base_url=settings.slack_api_url, max_retry_wait=10.0, ca_bundle=settings.ca_bundle)
               if token else None)
    return SlackActions(Store(settings.db), signing_secret=secret, interactive=interactive, updater=updater,
                        clock=clock, owns_store=True, over_socket=slack_app_token(settings) is not None)

