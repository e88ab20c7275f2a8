"""The issue's check for masked numbers: a real `callstatus serve` in masked mode takes realistic
signed traffic (PHLO reports and refused requests among it) and a reconcile run; then no byte of
any file under the data directory (database, WAL, snapshot, spool, the server's log) holds a
clear number sent, while a search by a clear number still finds its calls (the dashboard's query,
the Calls page, /api/v1/calls) and every page opens on the pseudonyms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import duckdb
import httpx
import pytest
from streamlit.testing.v1 import AppTest

from callstatus.core import settings as settings_module
from callstatus.core.numbers import NumberMasker, is_pseudonym, normalise, pseudonym
from callstatus.dashboard import connection
from callstatus.dashboard.queries import calls as call_queries
from callstatus.dashboard.screens.legs import PAIRINGS_OPEN
from callstatus.simulator.call_api import CallApiServer
from callstatus.simulator.config import DEFAULT_OUR_NUMBERS
from callstatus.simulator.simulate import LOSE_CALL, Simulated, SimulateOptions, simulated_calls
from tests.factories import make_settings, signed_request, wait_until
from tests.servers import start_server

pytestmark = pytest.mark.slow

TOKEN = "masked-webhook-token-0123"
AUTH_ID = "MAMASKED000000000001"
KEY = "masked-serve-number-key-0123456789"
SECRET = "masked-phlo-secret-0123"
OURS = ",".join(n.number for n in DEFAULT_OUR_NUMBERS)
CALLS = 80
APP = str(Path(__file__).resolve().parents[2] / "callstatus" / "dashboard" / "app.py")
PAGES = (
    "screens/overview.py",
    "screens/causes.py",
    "screens/legs.py",
    "screens/timing.py",
    "screens/destinations.py",
    "screens/calls.py",
    "screens/health.py",
)
# Where numbers (and names) ride in what the simulator sends and in Plivo's call records.
PERSONAL_KEYS = (
    "From",
    "To",
    "CallerName",
    "DialBLegTo",
    "DialBLegFrom",
    "ForwardedFrom",
    "from_number",
    "to_number",
    "caller_name",
)


@dataclass
class Served:
    data: Path
    db: Path
    log: Path
    played: list[Simulated]
    clear: dict[str, bytes]  # what must never be found -> its bytes
    files_running: dict[str, bytes]  # every file under data/ while the server ran
    api_calls: list[str]  # /api/v1/calls for a clear B number
    agent: str  # that B number, in clear
    caller: str  # a caller's number as Plivo sent it
    caller_call: str  # one of that caller's calls


def _clear_values(played: list[Simulated]) -> dict[str, bytes]:
    """Every caller, callee and agent number sent (digits: found with or without "+", in JSON
    or URL-encoded), every non-own SIP user, every caller name."""
    masker = NumberMasker(KEY, OURS.split(","))
    clear: dict[str, bytes] = {}
    values: list[str] = []
    for p in played:
        for hook in p.sent:
            params = hook.params()
            values += [str(params[key]) for key in PERSONAL_KEYS if key in params]
        for record in p.call.records:
            values += [str(record[key]) for key in PERSONAL_KEYS if record.get(key)]
    for value in values:
        if masker.is_own(value) or value.lower() == "anonymous":
            continue
        e164 = normalise(value)
        if e164 is not None:
            clear[e164] = e164[1:].encode()
        elif value.startswith("sip:"):
            clear[value] = value[4:].encode()  # user@host
        else:
            clear[value] = value.encode()  # a caller's name
    return clear


def _files(root: Path) -> dict[str, bytes]:
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            try:
                found[str(path.relative_to(root))] = path.read_bytes()
            except FileNotFoundError:  # a WAL or spool file gone meanwhile
                continue
    return found


def _reconcile(db: Path, env: dict[str, str]) -> None:
    now = datetime.now(UTC)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "callstatus.cli",
            "reconcile",
            "--db",
            str(db),
            "--since",
            (now - timedelta(hours=2)).isoformat(timespec="seconds"),
            "--until",
            (now + timedelta(hours=2)).isoformat(timespec="seconds"),
        ],
        env={**os.environ, **env},
        cwd=db.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "asking it" in done.stderr  # through the running server
    assert "calls added (no webhook at all)" in done.stdout


def _refused(url: str, caller: str, agent: str) -> None:
    """Forged webhooks carrying clear numbers (GET and POST), a PHLO report with a bad secret."""
    pairs = [("CallUUID", "forged-1"), ("From", caller), ("DialBLegTo", agent)]
    with httpx.Client(base_url=url, timeout=10) as client:
        for method in ("GET", "POST"):
            response = signed_request(
                client, method, "/plivo/hangup", pairs, base=url, token="not-the-token"
            )
            assert response.status_code == 403
        query = urlencode({"caller_number": caller, "secret": "wrong"})
        assert client.get(f"/plivo/phlo?{query}").status_code == 403


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("masked") / "data"
    data.mkdir()
    db = data / "callstatus.duckdb"
    signing = make_settings(data, PLIVO_AUTH_TOKEN=TOKEN, PHLO_SECRET=SECRET)
    with CallApiServer([], auth_id=AUTH_ID, token=TOKEN) as api:
        env = {
            "PLIVO_AUTH_TOKEN": TOKEN, "PLIVO_AUTH_ID": AUTH_ID, "PLIVO_API_URL": api.url,
            "PHLO_SECRET": SECRET, "CALLSTATUS_NUMBERS": "masked", "CALLSTATUS_NUMBER_KEY": KEY,
            "CALLSTATUS_OWN_NUMBERS": OURS, "CALLSTATUS_RECONCILE_INTERVAL": "0",
            "CALLSTATUS_SNAPSHOT_INTERVAL": "1",
        }  # fmt: skip
        server = start_server(db, env)
        try:
            options = SimulateOptions(
                url=server.url, calls=CALLS, rate=0, seed=16, lose_calls=0.1, phlo=0.3
            )
            status, played = simulated_calls(options, signing)
            assert status == 0 and len(played) == CALLS
            clear = _clear_values(played)
            kept = [p for p in played if p.loss != LOSE_CALL]
            inbound = next(p for p in kept if p.call.direction == "inbound")
            caller = str(inbound.sent[0].params()["From"])
            legs = [
                str(h.params()["DialBLegTo"])
                for p in kept
                for h in p.sent
                if "DialBLegTo" in h.params() and normalise(str(h.params()["DialBLegTo"]))
            ]
            agent = max(set(legs), key=legs.count)
            _refused(server.url, caller, agent)
            api.add([record for p in played for record in p.call.records])
            _reconcile(db, env)
            start = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
            query = {"start": start, "destination": agent, "limit": "1000"}

            def api_calls() -> list[str]:
                page = httpx.get(f"{server.url}/api/v1/calls", params=query, timeout=30)
                assert page.status_code == 200, page.text
                return [c["call_uuid"] for c in page.json()["calls"]]

            # The API reads the rollups, a refresh (or more, on a busy host) behind the
            # webhooks: every call that dialled the agent is there once they caught up.
            dialled = {
                p.call.call_uuid
                for p in kept
                if any(h.params().get("DialBLegTo") == agent for h in p.sent)
            }
            wait_until(lambda: set(api_calls()) >= dialled, timeout=60)
            found = api_calls()
            files_running = _files(data)
        finally:
            assert server.stop() == 0
    yield Served(
        data,
        db,
        server.log,
        played,
        clear,
        files_running,
        found,
        agent,
        caller,
        inbound.call.call_uuid,
    )


def _found(files: dict[str, bytes], clear: dict[str, bytes]) -> dict[str, list[str]]:
    return {
        value: hits
        for value, needle in clear.items()
        if (hits := [name for name, content in files.items() if needle in content])
    }


def test_the_traffic_carried_clear_numbers_names_and_sip_users(served: Served) -> None:
    kinds = {h.kind for p in served.played for h in p.sent}
    assert {"answer", "hangup", "dial_callback", "phlo"} <= kinds
    assert sum(v.startswith("+") for v in served.clear) > 50
    assert any("@" in v for v in served.clear) and any(" " in v for v in served.clear)


def test_no_file_under_data_holds_a_clear_number(served: Served) -> None:
    after = _files(served.data)
    names = set(after) | set(served.files_running)
    assert any(name.endswith(".wal") for name in served.files_running), names
    assert "callstatus-snapshot.duckdb" in after and served.log.name in after
    assert _found(served.files_running, served.clear) == {}
    assert _found(after, served.clear) == {}
    # The scan can see: our own numbers, stored in clear, are found in the same bytes.
    own = OURS.split(",")[0].encode()
    assert any(own in content for content in after.values())


def _every_table(path: Path) -> str:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [
            row[0]
            for row in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            ).fetchall()
        ]
        return json.dumps(
            {t: con.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables},
            default=str,
            ensure_ascii=False,
        )
    finally:
        con.close()


def test_no_row_of_any_table_holds_a_clear_number(served: Served) -> None:
    for path in (served.db, served.db.with_name("callstatus-snapshot.duckdb")):
        text = _every_table(path)
        assert [v for v in served.clear if v.lstrip("+") in text or v in text] == [], path
        assert pseudonym(served.caller, KEY) in text
    con = duckdb.connect(str(served.db), read_only=True)
    try:
        counts = dict(
            con.execute(
                "SELECT kind, count(*) FROM webhook_events"
                " WHERE kind IN ('cdr', 'phlo') GROUP BY kind"
            ).fetchall()
        )
        (refused,) = con.execute("SELECT count(*) FROM rejected_webhooks").fetchone() or (0,)
    finally:
        con.close()
    assert counts.get("cdr", 0) > 0 and counts.get("phlo", 0) > 0 and refused == 3


def test_the_api_finds_the_calls_of_a_clear_b_number(served: Served) -> None:
    dialled = {
        p.call.call_uuid
        for p in served.played
        if p.loss != LOSE_CALL and any(h.params().get("DialBLegTo") == served.agent for h in p.sent)
    }
    assert dialled and dialled <= set(served.api_calls)


@pytest.fixture(scope="module")
def pointed(served: Served) -> Iterator[Served]:
    """The dashboard's settings pointed at the stopped server's file, masked mode on."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in {
            "CALLSTATUS_DB": str(served.db),
            "CALLSTATUS_NUMBERS": "masked",
            "CALLSTATUS_NUMBER_KEY": KEY,
            "CALLSTATUS_OWN_NUMBERS": OURS,
        }.items():
            monkeypatch.setenv(name, value)
        settings_module.get_settings.cache_clear()
        yield served
    settings_module.get_settings.cache_clear()


def test_the_search_query_finds_a_callers_calls_by_clear_number(pointed: Served) -> None:
    masker = NumberMasker.from_settings(settings_module.get_settings())
    rel = connection.relations()
    spaced = f"+{pointed.caller[:1]} {pointed.caller[1:4]} {pointed.caller[4:]}"
    for typed in (pointed.caller, f"+{pointed.caller}", spaced):
        found = call_queries.search_calls(rel, typed, "UTC", masker=masker).frame
        assert pointed.caller_call in set(found["call_uuid"]), typed
        assert all(is_pseudonym(n) for n in found["from_number"] if n not in OURS.split(","))


def _page_text(at: AppTest) -> str:
    parts = [df.value.to_csv() for df in at.dataframe]
    for kind in ("markdown", "caption", "header", "title", "metric", "info", "warning", "code"):
        parts += [str(getattr(element, "value", "")) for element in at.get(kind)]
    return "\n".join(parts)


def _app(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    for key, value in {"range": "Last 24 hours", **query}.items():
        at.query_params[key] = value
    return at.run()


def test_the_calls_page_finds_a_call_by_clear_number(pointed: Served) -> None:
    at = _app(q=pointed.caller)
    at.switch_page("screens/calls.py").run()
    assert not at.exception
    [found] = [df.value for df in at.dataframe if "from_number" in df.value.columns][:1]
    assert pointed.caller_call in set(found["call_uuid"])
    assert pseudonym(pointed.caller, KEY) in set(found["from_number"])


def test_every_page_opens_on_pseudonyms(pointed: Served) -> None:
    at = _app()
    at.session_state[PAIRINGS_OPEN] = True  # A/B legs' listing of B numbers, opened
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        text = _page_text(at)
        leaked = [v for v in pointed.clear if v.lstrip("+") in text]
        assert leaked == [], page
    at.switch_page("screens/legs.py").run()
    assert "…" in _page_text(at)  # the B numbers' table shows pseudonyms


def test_a_clear_b_number_in_the_address_filters_the_legs_page(pointed: Served) -> None:
    con = duckdb.connect(str(pointed.db), read_only=True)
    try:
        dialled = {
            row[0]
            for row in con.execute(
                "SELECT a_leg_uuid FROM dial_legs WHERE b_leg_to = $b",
                {"b": pseudonym(pointed.agent, KEY)},
            ).fetchall()
        }
    finally:
        con.close()
    at = _app(dest=f"+{pointed.agent}")
    at.session_state[PAIRINGS_OPEN] = True  # the Pairings listing, opened
    at.switch_page("screens/legs.py").run()
    assert not at.exception
    [pairs] = [df.value for df in at.dataframe if "b_leg_to" in df.value.columns]
    assert not pairs.empty and set(pairs["a_leg_uuid"]) <= dialled
    assert pseudonym(pointed.agent, KEY) in set(pairs["b_leg_to"])


def test_a_clear_number_typed_in_the_pairings_search_finds_its_legs(pointed: Served) -> None:
    at = _app()
    at.session_state[PAIRINGS_OPEN] = True
    at.switch_page("screens/legs.py").run()
    at.text_input(key="pair_search").input(f"+{pointed.agent}").run()
    assert not at.exception
    [pairs] = [df.value for df in at.dataframe if "b_leg_to" in df.value.columns]
    assert not pairs.empty
    assert set(pairs["b_leg_to"]) == {pseudonym(pointed.agent, KEY)}
