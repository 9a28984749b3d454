"""Rule files as a careless editor or a hostile tester leaves them: whatever a file holds, the loaders answer
with problems (file, line, message) and nothing else, the running worker keeps its last good rules, and
`/healthz` says the files are broken.

The property tests throw arbitrary bytes, arbitrary text and random edits of the shipped files at every loader
(`scorecard.yaml`, `alerts.yaml`, the two kinds of rule test file); the plain tests below them pin each input
that once escaped as something other than a `RuleFileError`.
"""

from __future__ import annotations

import copy
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from connectors.sandboxes.world import World
from tests.worker.test_cli import healthbeat
from worker.alerting.rules import load_alert_rules
from worker.clock import ShiftedClock
from worker.config import Settings
from worker.cycle import Clients, Cycle
from worker.rulebook.alert_tests import load_test_file, rule_test_files, run_rule_tests
from worker.rulebook.in_force import RuleBook, load_rules
from worker.rulebook.scorecard_tests import load_scorecard_test_file, run_all_rule_tests, run_scorecard_tests
from worker.rulefile import MAX_BYTES, MAX_DEPTH, Problem, RuleFileError
from worker.scoring.scorecard import load_scorecard
from worker.scoring.sentiment import VaderModel
from worker.service.http import HealthServer, HealthState
from worker.service.metrics import Metrics, observe_cycle
from worker.store import Store

SHIPPED = Path(__file__).resolve().parents[2] / "rules"
LATIN_1 = "version: 1\n# caf\xe9 owners\nrules: []\n".encode("latin-1")  # a Windows editor's "ANSI" save


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A copy of the shipped rules with their tests: every file here may be broken by a test."""
    folder = tmp_path / "rules"
    shutil.copytree(SHIPPED, folder)
    return folder


def _problems(load: Callable[[], Any]) -> list[Problem]:
    with pytest.raises(RuleFileError) as caught:
        load()
    return caught.value.problems


# -- what every loader must do with anything --------------------------------------------------------------

_ALERTS = load_alert_rules(SHIPPED).rules.rules
_RULES = {rule.name: rule for rule in _ALERTS}
_SCORECARD = load_scorecard(SHIPPED).scorecard
LOADERS: dict[str, Callable[[Path], object]] = {
    "scorecard.yaml": lambda folder: load_scorecard(folder),
    "alerts.yaml": lambda folder: load_alert_rules(folder),
    "tests/turned_red.yaml": lambda folder: load_test_file(folder / "tests" / "turned_red.yaml", _RULES),
    "tests/scorecard_bands.yaml": lambda folder: load_scorecard_test_file(
        folder / "tests" / "scorecard_bands.yaml", _SCORECARD),
}


def _only_rule_file_errors(folder: Path, name: str, content: bytes) -> None:
    """Write `content` as the file `name` and load it: a result or a RuleFileError whose every problem names
    the file and prints as text a terminal can show; anything else is a failure."""
    path = folder / name
    path.write_bytes(content)
    try:
        LOADERS[name](folder)
    except RuleFileError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file == str(path)
            str(problem).encode("utf-8")  # a lone surrogate in a message would crash printing it


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "rules"
    shutil.copytree(SHIPPED, folder)
    return folder


PROPERTY = hypothesis.settings(max_examples=150, deadline=None,
                               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PROPERTY
@given(name=st.sampled_from(sorted(LOADERS)), content=st.binary(max_size=400))
def test_arbitrary_bytes_in_a_rule_file_are_problems_never_another_error(scratch: Path, name: str,
                                                                         content: bytes) -> None:
    _only_rule_file_errors(scratch, name, content)


# Pieces of YAML syntax, tags included: random text alone seldom reaches PyYAML's constructors.
_YAMLISH = st.lists(st.sampled_from([*"{}[]:-,&*!|>'\"#%@`? \n\t\\.019aexz", "\x85", "\u2028", "\ufeff", "\x1b", "<<",
                                     "---", "&a ", "*a", "!!timestamp ", "!!int ", "!!bool ", "!!float ", "!!binary ",
                                     "!!set ", "!!omap ", "!!pairs ", "!!python/name:os.system ", "%YAML 1.1\n",
                                     "2026-02-30", "2026-01-05T09:00:00Z", ".inf", "0x", "1_0"]),
                    max_size=40).map("".join)


@PROPERTY
@given(name=st.sampled_from(sorted(LOADERS)), text=st.text(max_size=300) | _YAMLISH)
def test_arbitrary_text_in_a_rule_file_is_problems_never_another_error(scratch: Path, name: str,
                                                                       text: str) -> None:
    _only_rule_file_errors(scratch, name, text.encode("utf-8", "surrogatepass"))


_SHIPPED_DATA = {name: yaml.safe_load((SHIPPED / name).read_text(encoding="utf-8")) for name in LOADERS}
_ODD_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
                | st.sampled_from(["", "7d", "-1d", "0s", "red", "fire", "band == 'red'", "score >", "{{",
                                   "2026-02-30T00:00:00Z", "1e400", "nan", "09:00-18:00", "mon", "#x"])
                | st.datetimes() | st.dates() | st.binary(max_size=4) | st.sets(st.integers(0, 3), max_size=2))
_ODD_VALUES = st.recursive(_ODD_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def _places(data: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and item of the tree, as a path from its top."""
    yield at
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _places(value, (*at, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _places(value, (*at, index))


@st.composite
def _edited(draw: st.DrawFn, name: str) -> bytes:
    """The shipped file with a few values replaced, removed or added where an editor might slip."""
    data = copy.deepcopy(_SHIPPED_DATA[name])
    for _ in range(draw(st.integers(1, 3))):
        places = [p for p in _places(data) if p]
        if not places:
            break
        at = draw(st.sampled_from(places))
        parent = data
        for part in at[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "remove":
            del parent[at[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(_ODD_VALUES)
        else:
            parent[at[-1]] = draw(_ODD_VALUES)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8", "surrogatepass")


@PROPERTY
@given(data=st.data(), name=st.sampled_from(sorted(LOADERS)))
def test_random_edits_of_the_shipped_files_are_problems_never_another_error(scratch: Path, data: st.DataObject,
                                                                            name: str) -> None:
    _only_rule_file_errors(scratch, name, data.draw(_edited(name)))


@hypothesis.settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_running_randomly_edited_alert_rule_tests_reports_never_raises(scratch: Path, data: st.DataObject) -> None:
    """`rules test` runs the cases of a file that loads: what a case holds must not crash the run either."""
    path = scratch / "tests" / "turned_red.yaml"
    path.write_bytes(data.draw(_edited("tests/turned_red.yaml")))

    report = run_rule_tests(scratch, [path])

    assert report.results or report.problems


# -- a rule file that is not UTF-8 ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["scorecard.yaml", "alerts.yaml"])
def test_a_rule_file_that_is_not_utf8_is_a_problem_with_its_line(rules_dir: Path, name: str) -> None:
    (rules_dir / name).write_bytes(LATIN_1)

    scorecard, alerts, problems = load_rules(rules_dir)

    assert problems == [f"{rules_dir / name}:2: not UTF-8: byte 0xE9 at byte 6 of the line (save the file as UTF-8)"]
    assert (scorecard is None) == (name == "scorecard.yaml") and (alerts is None) == (name == "alerts.yaml")


def test_a_utf16_rule_file_is_a_problem_not_a_crash(rules_dir: Path) -> None:
    path = rules_dir / "alerts.yaml"
    path.write_bytes((SHIPPED / "alerts.yaml").read_text(encoding="utf-8").encode("utf-16"))

    [problem] = _problems(lambda: load_alert_rules(rules_dir))

    assert (problem.line, problem.message) == (1, "not UTF-8: byte 0xFF at byte 1 of the line "
                                                  "(save the file as UTF-8)")


def test_a_rule_test_file_that_is_not_utf8_is_a_problem_of_the_test_run(rules_dir: Path) -> None:
    (rules_dir / "tests" / "turned_red.yaml").write_bytes(LATIN_1)

    report = run_all_rule_tests(rules_dir)

    assert [p for p in report.problems if "turned_red.yaml" in p] == [
        f"{rules_dir / 'tests' / 'turned_red.yaml'}:2: not UTF-8: byte 0xE9 at byte 6 of the line "
        f"(save the file as UTF-8)"]
    assert report.results  # the other files' cases still ran


def test_a_scorecard_test_file_that_is_not_utf8_is_a_problem_of_rules_check(rules_dir: Path) -> None:
    path = rules_dir / "tests" / "scorecard_bands.yaml"
    path.write_bytes(path.read_bytes().replace(b"# Tests for", "# T\xe9sts for".encode("latin-1"), 1))

    report = run_scorecard_tests(rules_dir, [path])

    assert report.problems == [f"{path}:1: not UTF-8: byte 0xE9 at byte 4 of the line (save the file as UTF-8)"]


def test_the_rule_book_keeps_its_last_good_rules_when_a_file_stops_being_utf8(rules_dir: Path) -> None:
    book = RuleBook(rules_dir)
    book.reload()
    good = book.scorecard
    (rules_dir / "scorecard.yaml").write_bytes(LATIN_1)

    problems = book.reload()

    assert book.scorecard is good and book.alerts is not None
    assert not book.healthy and problems == book.problems and "not UTF-8" in problems[0]


def test_a_cycle_with_a_non_utf8_rule_file_keeps_the_last_good_rules_and_healthz_says_degraded(
        world: World, store: Store, settings: Settings, clients: Clients, clock: ShiftedClock, vader: VaderModel,
        rules_dir: Path) -> None:
    cycle = Cycle(store, settings, RuleBook(rules_dir), clients, clock=clock, sentiment=vader)
    state, metrics = HealthState(timedelta(minutes=15), clock=clock), Metrics()
    assert cycle.run().ok
    (rules_dir / "alerts.yaml").write_bytes(LATIN_1)

    report = cycle.run()
    state.record_cycle(report, observe_cycle(metrics, report, store, clients=clients, rulebook=cycle.rulebook),
                       cycle.rulebook)
    with HealthServer(state, metrics, port=0, host="127.0.0.1") as server:
        response = httpx.get(f"{server.url}/healthz", timeout=5)

    assert report.ok, report.summary()
    assert {"sync", "score", "evaluate", "notify"} <= set(report.stages)
    body = response.json()
    assert (response.status_code, body["status"]) == (200, "degraded")
    assert body["rules"]["ok"] is False and body["rules"]["good_rules_loaded"] is True
    assert body["rules"]["problems"] == [f"{rules_dir / 'alerts.yaml'}:2: not UTF-8: byte 0xE9 at byte 6 of the "
                                         f"line (save the file as UTF-8)"]



@pytest.mark.parametrize("command", [["rules", "check"], ["rules", "test"]], ids=["check", "test"])
def test_a_rules_command_names_a_non_utf8_file_without_a_traceback(rules_dir: Path, tmp_path: Path,
                                                                   command: list[str]) -> None:
    (rules_dir / "alerts.yaml").write_bytes(LATIN_1)

    result = healthbeat(*command, "--rules-dir", str(rules_dir), cwd=tmp_path)

    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{rules_dir / 'alerts.yaml'}:2: not UTF-8: byte 0xE9 at byte 6 of the line (save the file as UTF-8)" in (
        result.stdout + result.stderr)


# -- other hostile files ----------------------------------------------------------------------------------

def test_a_rule_file_that_is_a_directory_is_a_problem(rules_dir: Path) -> None:
    path = rules_dir / "scorecard.yaml"
    path.unlink()
    path.mkdir()

    [problem] = _problems(lambda: load_scorecard(rules_dir))

    assert (problem.file, problem.message) == (str(path), "cannot read: it is a directory, not a file")


def test_an_empty_rule_file_is_a_problem(rules_dir: Path) -> None:
    (rules_dir / "alerts.yaml").write_bytes(b"")

    [problem] = _problems(lambda: load_alert_rules(rules_dir))

    assert problem.message == "expected a mapping at the top of the file"


def test_a_huge_rule_file_is_refused_before_it_is_parsed(rules_dir: Path) -> None:
    path = rules_dir / "scorecard.yaml"
    with path.open("ab") as file:
        file.write(b"# padding\n" * (MAX_BYTES // 10 + 1))

    [problem] = _problems(lambda: load_scorecard(rules_dir))

    assert problem.message == f"too large: a rule file may hold at most {MAX_BYTES // 1024} KiB"


def test_a_nul_byte_in_a_rule_file_is_a_problem_with_its_line(rules_dir: Path) -> None:
    path = rules_dir / "alerts.yaml"
    path.write_bytes(b"version: 1\ndigest: {min: 3\x00}\nrules: []\n")

    [problem] = _problems(lambda: load_alert_rules(rules_dir))

    assert (problem.line, problem.message) == (2, "not valid YAML: the character U+0000 is not allowed in a "
                                                  "YAML file")


@pytest.mark.parametrize("nested", [
    "rules: " + "[" * 5000 + "]" * 5000,
    "rules: " + "{a: " * 400 + "1" + "}" * 400,
    "rules:\n" + "".join("  " * depth + "- \n" for depth in range(1, MAX_DEPTH + 5)),
], ids=["flow lists", "flow mappings", "block lists"])
def test_deeply_nested_yaml_is_a_problem_not_a_recursion_error(rules_dir: Path, nested: str) -> None:
    (rules_dir / "alerts.yaml").write_text(f"version: 1\n{nested}\n", encoding="utf-8")

    [problem] = _problems(lambda: load_alert_rules(rules_dir))

    assert problem.message == f"not valid YAML: nested more than {MAX_DEPTH} levels deep"
    assert problem.line is not None and problem.line >= 2


def test_nesting_within_the_limit_is_still_read(rules_dir: Path) -> None:
    (rules_dir / "alerts.yaml").write_text("version: 1\nx: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n",
                                           encoding="utf-8")

    [problem] = _problems(lambda: load_alert_rules(rules_dir))

    assert (problem.field, problem.message) == ("x", "unknown key (misspelt? see the documented keys)")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_in_place_of_a_rule_file_is_a_problem_not_a_hang(rules_dir: Path) -> None:
    path = rules_dir / "alerts.yaml"
    path.unlink()
    os.mkfifo(path)
    book = RuleBook(rules_dir)
    answers: list[list[str]] = []
    reading = threading.Thread(target=lambda: answers.append(book.reload()), daemon=True)

    reading.start()
    reading.join(timeout=10)

    assert not reading.is_alive(), "reading a named pipe blocked the worker"
    assert answers == [[f"{path}: cannot read: it is not a regular file"]]


def test_a_rule_test_file_that_disappears_after_listing_is_a_problem(rules_dir: Path) -> None:
    files = rule_test_files(rules_dir, "alerts")
    files[0].unlink()

    report = run_rule_tests(rules_dir, files)

    assert report.problems == [f"{files[0]}: cannot read: No such file or directory"]


def test_a_rule_file_that_disappears_between_reloads_is_a_problem_and_the_good_rules_stay(rules_dir: Path) -> None:
    book = RuleBook(rules_dir)
    book.reload()
    good = book.alerts
    (rules_dir / "alerts.yaml").unlink()

    problems = book.reload()

    assert book.alerts is good
    assert problems == [f"{rules_dir / 'alerts.yaml'}: cannot read: No such file or directory"]


def test_an_impossible_date_in_a_rule_test_file_is_a_problem_with_its_line(rules_dir: Path) -> None:
    path = rules_dir / "tests" / "turned_red.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("start: 2026-01-05T09:00:00Z", "start: 2026-02-30T09:00:00Z"), encoding="utf-8")

    report = run_rule_tests(rules_dir, [path])

    line = path.read_text(encoding="utf-8").splitlines().index("start: 2026-02-30T09:00:00Z") + 1
    assert report.problems == [f"{path}:{line}: not valid YAML: '2026-02-30T09:00:00Z' is not a valid timestamp "
                               f"(day is out of range for month)"]


@pytest.mark.parametrize(("value", "message"), [
    ("!!int three", "'three' is not a valid int (invalid literal for int() with base 10: 'three')"),
    ("!!timestamp soon", "'soon' is not a valid timestamp"),
    ("!!bool maybe", "'maybe' is not a valid bool"),
])
def test_a_value_its_yaml_tag_cannot_read_is_a_problem_with_its_line(rules_dir: Path, value: str,
                                                                     message: str) -> None:
    (rules_dir / "alerts.yaml").write_text(f"version: 1\ndigest:\n  min: {value}\nrules: []\n", encoding="utf-8")

    [problem] = _problems(lambda: load_alert_rules(rules_dir))

    assert (problem.line, problem.message) == (3, f"not valid YAML: {message}")


def test_a_named_pipe_among_the_rule_tests_is_told_apart_without_blocking(tmp_path: Path) -> None:
    from worker.rulebook.alert_tests import rule_test_kind

    pipe = tmp_path / "blocking.yaml"
    os.mkfifo(pipe)

    assert rule_test_kind(pipe) == "alerts"  # its loader then names the problem
