"""The Grafana dashboards, run for real against a conversation log written by the app's own code.

Grafana cannot run here, so this module does what its PostgreSQL datasource does with a panel:
it expands the macros of each panel's SQL for a fixed time window (``expand_macros``, a port of
Grafana's ``sqleng.Interpolate`` and of the postgres plugin's ``macros.go``, failing on any macro
it does not know), then runs the SQL on a real PostgreSQL whose log was filled through
``open_store(...).save_exchange / save_feedback / set_relevance``. Each panel is its own test
case (id = panel title). Checked per panel: the query runs, returns rows of the declared
columns, time series have a sorted ``time`` column and numeric values, nothing outside the time
range leaks in, and the results do not depend on the session time zone. A few panels are also
checked against totals computed in Python from the seeded exchanges, and mutated copies of the
dashboard prove that these checks do fail on a broken query.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
import yaml

from assistant.conversation_log import RELEVANCE_VALUES, Exchange, open_store

REPO = Path(__file__).resolve().parent.parent
GRAFANA_DIR = REPO / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
DATASOURCE_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "postgres.yaml"
PROVIDER_FILE = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yaml"
DATASOURCE_UID = "arsonor-pg"
POSTGRES_PLUGIN_IDS = ("grafana-postgresql-datasource", "postgres")  # id since 10.2.3, alias
TIME_ZONES = ("Pacific/Auckland", "America/Los_Angeles", "Asia/Kathmandu")  # +13/+12, -8/-7, +5:45
INTERVAL = 300  # seconds: what Grafana would compute for a few hours on a wide panel

# The columns each panel's query must return, in order (a new panel must be declared here).
EXPECTED_COLUMNS = {
    "Exchanges": ["exchanges", "conversations"],
    "Feedback +1 / -1": ["+1", "-1"],
    "Feedback rate": ["feedback rate"],
    "Error rate": ["error rate", "errors"],
    "LLM cost": ["total (USD)", "exchanges of unknown cost"],
    "LLM cost over time": ["time", "answers", "judge"],
    "Tokens over time": ["time", "prompt", "completion", "judge"],
    "Response time": ["time", "avg", "p95"],
    "Retrieval and LLM latency": ["time", "retrieval", "llm"],
    "Error rate over time": ["time", "error rate"],
    "Relevance of answers": ["relevance", "exchanges"],
    "Answer mode": ["mode", "exchanges"],
    "Model used": ["model", "exchanges"],
    "Last conversations": ["time", "question", "answer", "relevance", "mode", "response_time"],
    "Errors by status": ["status", "exchanges", "last seen", "last error"],
    "Questions the blog doesn't cover": ["question", "asked", "not covered", "thumbs down",
                                         "languages", "last seen"],
}

# SQL that would make a panel depend on the session time zone or on the clock, not on the
# time range Grafana sends: bucket with $__timeGroup, filter with $__timeFilter.
FORBIDDEN_SQL = {
    r"\bdate_trunc\s*\(": "date_trunc buckets on the session's local time: use $__timeGroupAlias",
    r"\bdate_bin\s*\(": "use $__timeGroupAlias",
    r"::\s*date\b": "a cast to date depends on the session time zone",
    r"\bat\s+time\s+zone\b": "the time zone is Grafana's business (dashboard timezone)",
    r"\bnow\s*\(\s*\)|\bcurrent_(date|timestamp)\b": "use the time range ($__timeFilter)",
}


# -- Grafana's macro expansion ---------------------------------------------------------------


class MacroError(ValueError):
    """A macro that Grafana would reject, or that this port does not know."""


_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")  # macros.go: sExpr
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _rfc3339_nano(value: datetime) -> str:
    """Go's ``t.UTC().Format(time.RFC3339Nano)``: trailing zeros of the fraction dropped."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise MacroError(f"time range bound must be timezone-aware, got {value!r}")
    value = value.astimezone(timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _format_interval(seconds: float) -> str:
    """gtime.FormatInterval: the interval as Grafana writes ``$__interval`` (truncating)."""
    ms = int(round(seconds * 1000))
    for unit, size in (("y", 365 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def _parse_interval(text: str) -> float:
    """gtime.ParseInterval, in seconds: ``Nd`` / ``Nw`` or a Go duration (``5m``, ``1h30m``).
    ``M`` and ``y`` depend on the calendar in Grafana: not supported here, so they fail."""
    text = text.strip().strip("'")
    match = re.fullmatch(r"(\d+)([dwMy])", text)
    if match:
        number, unit = int(match.group(1)), match.group(2)
        if unit in "My":
            raise MacroError(f"interval {text!r}: calendar units are not supported by this test")
        return number * (86_400 if unit == "d" else 7 * 86_400)
    if not text or _DURATION_PART.sub("", text) != "" or text == "0":
        raise MacroError(f"error parsing interval {text}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def _go_float(value: float) -> str:
    """Go's ``fmt.Sprintf("%v", float64)``: shortest digits, exponent from 1e+06 / below 1e-4."""
    if value == 0:
        return "0"
    decimal = Decimal(repr(float(value)))
    exponent = decimal.adjusted()
    if -4 <= exponent < 6:
        text = format(decimal, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    sign, coefficient, _ = decimal.normalize().as_tuple()
    figures = "".join(map(str, coefficient))
    head = figures[0] + ("." + figures[1:] if len(figures) > 1 else "")
    return f"{'-' if sign else ''}{head}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"


def _check_fill(value: str) -> None:
    """sqleng.SetupFillmode: NULL, previous or a number."""
    if value in ("NULL", "previous"):
        return
    try:
        float(value)
    except ValueError:
        raise MacroError(f"error parsing fill value {value}") from None


def expand_macros(sql: str, start: datetime, end: datetime, interval_seconds: float) -> str:
    """The SQL that Grafana's PostgreSQL datasource sends for ``sql`` over [start, end].

    First the global substitutions (sqleng.Interpolate: ``$__interval_ms``, ``$__interval``,
    ``$__unixEpochFrom()``, ``$__unixEpochTo()``), then every ``$__name(args)`` macro as the
    postgres plugin's macros.go writes it (timescaledb off). Raises MacroError on a macro this
    port does not know and on any ``$variable`` left over (the dashboards define none)."""
    frm, to = _rfc3339_nano(start), _rfc3339_nano(end)
    frm_epoch = int(start.timestamp() // 1)
    to_epoch = int(end.timestamp() // 1)
    frm_ns = int(Decimal(str(start.timestamp())) * 1_000_000_000)
    to_ns = int(Decimal(str(end.timestamp())) * 1_000_000_000)
    interval_text = _format_interval(interval_seconds)
    interval_ms = str(int(round(interval_seconds * 1000)))

    for name, value in (("${__interval_ms}", interval_ms), ("$__interval_ms", interval_ms),
                        ("${__interval}", interval_text), ("$__interval", interval_text),
                        ("$__unixEpochFrom()", str(frm_epoch)),
                        ("$__unixEpochTo()", str(to_epoch))):
        sql = sql.replace(name, value)

    def group(args: list[str], name: str) -> float:
        if len(args) < 2 or not args[0]:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        if len(args) > 3:
            raise MacroError(f"macro {name}: too many arguments {args}")
        seconds = _parse_interval(args[1])
        if len(args) == 3:
            _check_fill(args[2])
        return seconds

    def column(args: list[str], name: str) -> str:
        if not args or not args[0]:
            raise MacroError(f"missing time column argument for macro {name}")
        return args[0]

    def evaluate(name: str, args: list[str]) -> str:
        if name == "__time":
            return f'{column(args, name)} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {column(args, name)}) as "time"'
        if name == "__timeFilter":
            return f"{column(args, name)} BETWEEN '{frm}' AND '{to}'"
        if name == "__timeFrom":
            return f"'{frm}'"
        if name == "__timeTo":
            return f"'{to}'"
        if name == "__timeGroup":
            seconds = _go_float(group(args, name))
            return f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"
        if name == "__timeGroupAlias":
            return evaluate("__timeGroup", args) + ' AS "time"'
        if name == "__unixEpochFilter":
            col = column(args, name)
            return f"{col} >= {frm_epoch} AND {col} <= {to_epoch}"
        if name == "__unixEpochNanoFilter":
            col = column(args, name)
            return f"{col} >= {frm_ns} AND {col} <= {to_ns}"
        if name == "__unixEpochNanoFrom":
            return str(frm_ns)
        if name == "__unixEpochNanoTo":
            return str(to_ns)
        if name == "__unixEpochGroup":
            seconds = _go_float(group(args, name))
            return f"floor(({args[0]})/{seconds})*{seconds}"
        if name == "__unixEpochGroupAlias":
            return evaluate("__unixEpochGroup", args) + ' AS "time"'
        raise MacroError(f"unknown macro {name!r}")

    def replace(match: re.Match) -> str:
        name = match.group(1)
        # macros.go: "$__timeGroup(...)," is the pre-5.3 form and gets the alias
        if name == "__timeGroup" and match.string[match.end():match.end() + 1] == ",":
            name = "__timeGroupAlias"
        args = [a.strip(" ") for a in match.group(2).split(",")]
        return evaluate(name, args)

    sql = _MACRO.sub(replace, sql)
    leftover = re.search(r"\$(\{?\w+\}?|\[\[)", sql)
    if leftover:
        raise MacroError(f"unexpanded variable or macro {leftover.group(0)!r} in: {sql}")
    return sql


# -- the dashboards --------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelCase:
    dashboard: str  # file name
    title: str
    panel: dict = field(hash=False, compare=False)
    target: dict = field(hash=False, compare=False)

    @property
    def sql(self) -> str:
        return self.target["rawSql"]

    @property
    def format(self) -> str:
        return self.target.get("format", "time_series")  # Grafana's default for SQL targets


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def load_dashboard(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def iter_panels(panels: list[dict]):
    """Every panel, those nested in (collapsed) rows included."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def panel_cases(dashboard: dict, name: str) -> list[PanelCase]:
    cases = []
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets") or []:
            cases.append(PanelCase(name, panel["title"], panel, target))
    return cases


ALL_CASES = [case for path in dashboard_files()
             for case in panel_cases(load_dashboard(path), path.name)]


def _case_id(case: PanelCase) -> str:
    same_title = [c for c in ALL_CASES if c.title == case.title]
    text = case.title
    if len({c.dashboard for c in same_title}) > 1:
        text = f"{case.dashboard}:{text}"
    if len(same_title) > 1:
        text += f" [{case.target.get('refId')}]"
    return text


CASE_IDS = [_case_id(case) for case in ALL_CASES]


def find_case(title: str) -> PanelCase:
    found = [case for case in ALL_CASES if case.title == title]
    assert len(found) == 1, f"expected one panel titled {title!r}, found {len(found)}"
    return found[0]


def run_sql(conn, sql: str, start: datetime, end: datetime,
            interval_seconds: float = INTERVAL) -> tuple[list[str], list[tuple]]:
    """Expand and run one panel query: (column names, rows). Errors propagate."""
    with conn.cursor() as cur:
        cur.execute(expand_macros(sql, start, end, interval_seconds))
        return [d.name for d in cur.description], cur.fetchall()


def is_number(value) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def check_time_series(columns: list[str], rows: list[tuple]) -> None:
    """What Grafana needs to draw a (wide) time series: a ``time`` column of epoch numbers or
    timestamps, sorted and without duplicates, and numeric value columns."""
    assert columns and columns[0] == "time", f"first column must be 'time', got {columns}"
    times = [row[0] for row in rows]
    assert all(is_number(t) or isinstance(t, datetime) for t in times), \
        f"time column holds {sorted({type(t).__name__ for t in times})}"
    assert times == sorted(times), "rows are not sorted by time (ORDER BY 1 is missing)"
    assert len(set(times)) == len(times), "one time appears twice: group by the time bucket only"
    value_columns = columns[1:]
    assert value_columns, "a time series needs at least one value column"
    for index, name in enumerate(value_columns, 1):
        values = [row[index] for row in rows]
        assert all(v is None or is_number(v) for v in values), \
            f"column {name!r} is not numeric: {sorted({type(v).__name__ for v in values})}"
    assert any(is_number(row[i]) for row in rows for i in range(1, len(columns))), \
        "no numeric value at all"


def check_shape(case: PanelCase, columns: list[str], rows: list[tuple]) -> None:
    assert case.title in EXPECTED_COLUMNS, \
        f"declare the columns of panel {case.title!r} in EXPECTED_COLUMNS"
    assert columns == EXPECTED_COLUMNS[case.title]
    assert rows, "no rows on the seeded log"
    if case.format == "time_series":
        check_time_series(columns, rows)
    else:
        assert all(len(row) == len(columns) for row in rows)
        assert any(is_number(v) and v != 0 or isinstance(v, (str, datetime))
                   for row in rows for v in row), "only NULLs and zeros"
        if case.panel["type"] in ("stat", "piechart", "barchart"):
            assert any(is_number(v) and v != 0 for row in rows for v in row), \
                f"{case.panel['type']} panel shows no non-zero number"


# -- the seeded conversation log -------------------------------------------------------------


@dataclass
class SeededLog:
    url: str
    start: datetime
    end: datetime
    exchanges: list[Exchange]  # those inside [start, end], as stored (relevance included)
    feedback: list[int]  # +1 / -1 values given (all inside the window)
    outside: list[Exchange]  # stored outside the window
    thumbs_down: list[str] = field(default_factory=list)  # conversations rated -1


MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-nano")
QUESTIONS = (
    "Comment régler un compresseur sur une voix ?",
    "Quelle différence entre un EQ paramétrique et graphique ?",
    "How do I treat the first reflections in a small room?",
    "Qu'est-ce que la synthèse soustractive ?",
    "Which microphone for a podcast at home?",
    "Pourquoi mon mix sonne-t-il boueux dans les graves ?",
)


def seed_log(url: str, data_dir: Path, now: datetime) -> SeededLog:
    """~50 exchanges over the last four hours, through the app's own logging code."""
    rng = random.Random(1234)
    store = open_store(url, data_dir=data_dir)
    try:
        assert store.upgrade()  # a fresh database: migrations applied
        inside: list[Exchange] = []
        conversation_id, turn = None, 0
        for i in range(52):
            if turn == 0 or rng.random() < 0.6:
                conversation_id, turn = secrets.token_hex(8), 0
            turn += 1
            created = now - timedelta(minutes=245 - 4.7 * i, seconds=rng.uniform(0, 50))
            status, error = "ok", None
            if i % 11 == 3:
                status, error = "llm_error", "APITimeoutError: Request timed out (attempt 3/3)"
            elif i % 17 == 5:
                status, error = "engine_error", "elasticsearch unreachable: connection refused"
            if status == "engine_error":
                mode = None
            elif status == "llm_error" or rng.random() < 0.3:
                mode = "extractive"
            else:
                mode = "llm"
            model = rng.choice(MODELS) if mode == "llm" else None
            prompt = completion = 0
            cost: float | None = 0.0
            llm_time = None
            retrieval_time = round(rng.uniform(0.02, 0.4), 4)
            response_time = round(retrieval_time + rng.uniform(0.05, 0.3), 4)
            if mode == "llm":
                prompt, completion = rng.randint(600, 2400), rng.randint(80, 450)
                llm_time = round(rng.uniform(0.8, 5.5), 4)
                response_time = round(retrieval_time + llm_time + rng.uniform(0.01, 0.1), 4)
                cost = round(prompt * 0.15e-6 + completion * 0.6e-6, 8)
                if i % 7 == 0:
                    model, cost = "local-mistral", None  # no known price
            elif status == "llm_error":
                prompt = completion = None
                cost = None
                llm_time = 30.0
                response_time = round(retrieval_time + 30.0 + rng.uniform(0.1, 0.5), 4)
            elif status == "engine_error":
                retrieval_time = None
                response_time = round(rng.uniform(0.01, 0.05), 4)
            answer = None if status == "engine_error" else f"Réponse {i} [1]"
            # Some questions the coverage gate declined (issue 8): no sources, a low score.
            declined = status == "ok" and i % 6 == 1
            exchange = Exchange(
                conversation_id=conversation_id, turn=turn, question=rng.choice(QUESTIONS),
                answer=answer, sources=[{"article_id": "0a1b2c3d", "chunk_id": f"0a1b2c3d-{i}",
                                         "title": "Compression", "url": "/articles/0a1b2c3d",
                                         "score": 0.5}],
                mode=mode, model=model, category="LE HOME STUDIO", language="fr",
                status=status, error=error, response_time=response_time,
                retrieval_time=retrieval_time, llm_time=llm_time, prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=None if prompt is None else prompt + completion,
                judge_prompt_tokens=0, judge_completion_tokens=0, judge_total_tokens=0,
                cost=cost, created_at=created, covered=not declined,
                coverage_score=0.04 if declined else 0.9)
            if declined:
                exchange.sources = []
            assert store.save_exchange(exchange), "the database is up: nothing may be spooled"
            inside.append(exchange)

        # The batch judge: verdicts (and their cost) on two thirds of the answered exchanges.
        for j, exchange in enumerate(e for e in inside if e.status == "ok"):
            if j % 3 == 2:
                continue
            verdict = RELEVANCE_VALUES[j % 3 if j % 5 else 2]
            jp, jc = rng.randint(300, 900), rng.randint(20, 120)
            judge_cost = None if j % 8 == 0 else round(jp * 0.15e-6 + jc * 0.6e-6, 8)
            store.set_relevance(exchange.id, verdict, "because", prompt_tokens=jp,
                                completion_tokens=jc, cost=judge_cost)
            exchange.relevance, exchange.relevance_explanation = verdict, "because"
            exchange.judge_prompt_tokens, exchange.judge_completion_tokens = jp, jc
            exchange.judge_total_tokens, exchange.judge_cost = jp + jc, judge_cost

        # Users' thumbs, on every other conversation (attached to its latest exchange; the
        # store stamps them with the current time, which is inside the window).
        feedback, thumbs_down = [], []
        for k, cid in enumerate(dict.fromkeys(e.conversation_id for e in inside)):
            if k % 2 == 0:
                value = 1 if k % 3 else -1
                assert store.save_feedback(value, None if value > 0 else "faux",
                                           conversation_id=cid) == "stored"
                feedback.append(value)
                if value < 0:
                    thumbs_down.append(cid)

        # Outside the window: two days ago and in an hour. Huge costs so that a leak shows.
        outside = []
        for when in (now - timedelta(days=2), now - timedelta(days=2, hours=3),
                     now + timedelta(hours=1)):
            exchange = Exchange(question="hors fenêtre", answer="—", mode="llm", model="gpt-old",
                                status="llm_error", error="old", response_time=99.0,
                                retrieval_time=9.0, llm_time=90.0, prompt_tokens=10**6,
                                completion_tokens=10**6, total_tokens=2 * 10**6, cost=1000.0,
                                relevance="NON_RELEVANT", created_at=when)
            assert store.save_exchange(exchange)
            outside.append(exchange)
        return SeededLog(url=url, start=now - timedelta(hours=6), end=now + timedelta(minutes=10),
                         exchanges=inside, feedback=feedback, outside=outside,
                         thumbs_down=thumbs_down)
    finally:
        store.close()


@pytest.fixture(scope="module")
def seeded(pg_cluster, tmp_path_factory) -> SeededLog:
    pg_cluster.start()
    url = pg_cluster.create_database(f"grafana_{secrets.token_hex(6)}")
    return seed_log(url, tmp_path_factory.mktemp("grafana-log"), datetime.now(timezone.utc))


@pytest.fixture
def db(seeded, pg_cluster):
    pg_cluster.start()  # an earlier test may have stopped the cluster
    conn = psycopg2.connect(seeded.url, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    try:
        yield conn
    finally:
        conn.close()


def set_time_zone(conn, zone: str) -> None:
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE %s", (zone,))


# -- the dashboards' JSON --------------------------------------------------------------------


def test_there_is_a_dashboard_and_its_panels_query_postgres():
    assert dashboard_files(), f"no dashboard JSON in {DASHBOARD_DIR}"
    assert ALL_CASES, "the dashboards have no query"
    assert {c.title for c in ALL_CASES} == set(EXPECTED_COLUMNS), \
        "EXPECTED_COLUMNS and the dashboards' panels differ"


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_json(path):
    dashboard = load_dashboard(path)
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert dashboard["title"]
    assert dashboard.get("id") is None, "provisioned dashboards carry no database id"
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["time"] == {"from": "now-24h", "to": "now"}
    assert dashboard["refresh"] == "30s"
    assert dashboard["timezone"] == "browser"
    panels = list(iter_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            assert "targets" not in panel
            if not panel.get("collapsed"):
                assert not panel.get("panels"), "an open row keeps its panels at the top level"
            continue
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        assert panel["datasource"]["type"] in POSTGRES_PLUGIN_IDS, panel["title"]
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID
            assert target.get("rawQuery") is True and target.get("editorMode") == "code"
            assert target.get("format") in ("table", "time_series"), panel["title"]
            if panel["type"] == "timeseries":
                assert target["format"] == "time_series", panel["title"]
    # the top-level panels do not overlap
    cells = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("case", ALL_CASES, ids=CASE_IDS)
def test_query_reads_the_time_range_with_grafana_macros(case):
    sql = case.sql
    reads = len(re.findall(r"\b(?:from|join)\s+(?:conversations|feedback)\b", sql, re.I))
    filters = len(re.findall(r"\$__timeFilter\(\s*created_at\s*\)", sql))
    assert reads >= 1, "the panel reads neither conversations nor feedback"
    assert filters == reads, \
        f"{reads} read(s) of the log but {filters} $__timeFilter(created_at): filter every one"
    for pattern, why in FORBIDDEN_SQL.items():
        assert not re.search(pattern, sql, re.I), f"{pattern}: {why}"


def test_datasource_provisioning():
    config = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["uid"] == DATASOURCE_UID
    assert source["type"] in POSTGRES_PLUGIN_IDS
    assert re.fullmatch(r"\$\{?POSTGRES_HOST\}?(:\$\{?POSTGRES_PORT\}?)?", source["url"])
    assert source["user"] == "${POSTGRES_USER}"
    assert source["jsonData"]["database"] == "${POSTGRES_DB}"
    assert source["secureJsonData"]["password"] == "${POSTGRES_PASSWORD}"
    assert "password" not in source and "database" not in source, \
        "Grafana 12 ignores top-level password/database: use secureJsonData/jsonData"
    assert source["jsonData"]["sslmode"] == "disable"
    assert source["jsonData"]["timescaledb"] is False  # else $__timeGroup becomes time_bucket()


def test_dashboard_provider():
    config = yaml.safe_load(PROVIDER_FILE.read_text(encoding="utf-8"))
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# -- macro expansion -------------------------------------------------------------------------

T0 = datetime(2018, 4, 12, 18, 0, tzinfo=timezone.utc)
T1 = datetime(2018, 4, 12, 18, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("sql, expanded", [
    ("WHERE $__timeFilter(time_column)",
     "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"),
    ("SELECT $__timeFrom(), $__timeTo()", "SELECT '2018-04-12T18:00:00Z', '2018-04-12T18:05:00Z'"),
    ("GROUP BY $__timeGroup(time_column,'5m')",
     "GROUP BY floor(extract(epoch from time_column)/300)*300"),
    ("GROUP BY $__timeGroup(time_column, 6h, NULL)",
     "GROUP BY floor(extract(epoch from time_column)/21600)*21600"),
    ("SELECT $__timeGroupAlias(created_at, $__interval, 0)",
     "SELECT floor(extract(epoch from created_at)/300)*300 AS \"time\""),
    ("SELECT $__timeGroup(time_column, 1d, previous), v",  # pre-5.3 form: alias added
     "SELECT floor(extract(epoch from time_column)/86400)*86400 AS \"time\", v"),
    ("SELECT $__time(t), $__timeEpoch(t)",
     "SELECT t AS \"time\", extract(epoch from t) as \"time\""),
    ("WHERE $__unixEpochFilter(ts)", "WHERE ts >= 1523556000 AND ts <= 1523556300"),
    ("WHERE ts > $__unixEpochFrom() AND ts < $__unixEpochTo()",
     "WHERE ts > 1523556000 AND ts < 1523556300"),
    ("SELECT $__unixEpochGroupAlias(ts, 10m)", "SELECT floor((ts)/600)*600 AS \"time\""),
    ("WHERE $__unixEpochNanoFilter(ns)",
     "WHERE ns >= 1523556000000000000 AND ns <= 1523556300000000000"),
    ("SELECT '$__interval', $__interval_ms", "SELECT '5m', 300000"),
])
def test_expand_macros(sql, expanded):
    assert expand_macros(sql, T0, T1, 300) == expanded


def test_expand_macros_intervals_as_grafana_writes_them():
    assert expand_macros("$__interval", T0, T1, 90) == "1m"  # FormatInterval truncates
    assert expand_macros("$__timeGroup(t, $__interval)", T0, T1, 90) == \
        "floor(extract(epoch from t)/60)*60"
    assert expand_macros("$__timeGroup(t, 1h30m)", T0, T1, 1) == \
        "floor(extract(epoch from t)/5400)*5400"
    assert expand_macros("$__timeGroup(t, 14d)", T0, T1, 1) == \
        "floor(extract(epoch from t)/1.2096e+06)*1.2096e+06"
    assert expand_macros("$__timeGroup(t, 500ms)", T0, T1, 1) == \
        "floor(extract(epoch from t)/0.5)*0.5"
    frac = T0.replace(microsecond=250000)
    assert expand_macros("$__timeFrom()", frac, T1, 1) == "'2018-04-12T18:00:00.25Z'"
    local = T0.astimezone(timezone(timedelta(hours=-7)))  # same instant, written in UTC
    assert expand_macros("$__timeFrom()", local, T1, 1) == "'2018-04-12T18:00:00Z'"


@pytest.mark.parametrize("sql", [
    "WHERE $__timeFilterz(created_at)",  # unknown macro
    "WHERE $__timeFilter()",  # missing column
    "SELECT $__timeGroup(created_at)",  # missing interval
    "SELECT $__timeGroup(created_at, 5 minutes)",  # not a Grafana interval
    "SELECT $__timeGroup(created_at, 5m, zero)",  # bad fill
    "SELECT $__timeGroup(created_at, 1M)",  # calendar unit: not supported here
    "WHERE created_at > now() - interval '$__range'",  # a variable this port does not expand
    "WHERE model = '$model'",  # a template variable: the dashboards define none
])
def test_expand_macros_fails_loudly(sql):
    with pytest.raises(MacroError):
        expand_macros(sql, T0, T1, 300)


def test_expand_macros_needs_aware_times():
    with pytest.raises(MacroError):
        expand_macros("$__timeFilter(t)", T0.replace(tzinfo=None), T1, 300)


# -- the panels on the seeded log ------------------------------------------------------------


@pytest.mark.parametrize("case", ALL_CASES, ids=CASE_IDS)
def test_panel_returns_its_columns_on_the_log(case, db, seeded):
    columns, rows = run_sql(db, case.sql, seeded.start, seeded.end)
    check_shape(case, columns, rows)


@pytest.mark.parametrize("case", ALL_CASES, ids=CASE_IDS)
def test_panel_reads_nothing_outside_its_time_range(case, db, seeded):
    """On a window that holds none of the log: no rows, or only NULLs and zeros."""
    start = seeded.start - timedelta(days=400)
    _, rows = run_sql(db, case.sql, start, start + timedelta(hours=1))
    for row in rows:
        assert all(v in (None, 0) for v in row), f"data outside the time range: {row}"


@pytest.mark.parametrize("case", ALL_CASES, ids=CASE_IDS)
def test_panel_does_not_depend_on_the_session_time_zone(case, db, seeded):
    for interval in (INTERVAL, 3600, 86400):
        baseline = run_sql(db, case.sql, seeded.start, seeded.end, interval)
        for zone in TIME_ZONES:
            set_time_zone(db, zone)
            try:
                assert run_sql(db, case.sql, seeded.start, seeded.end, interval) == baseline, \
                    f"results differ in {zone} (interval {interval}s)"
            finally:
                set_time_zone(db, "UTC")


# -- what the panels say, against the seeded exchanges ---------------------------------------


def _column(columns, rows, name):
    return [row[columns.index(name)] for row in rows]


def _by_label(columns, rows):
    return {row[0]: row[1] for row in rows}


def _percentile_cont(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def _bucket(created: datetime, seconds: int) -> int:
    micros = (created - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    return micros // (seconds * 1_000_000) * seconds


def _total(values) -> float:
    return sum(float(v) for v in values if v is not None)


def check_exchanges(columns, rows, log: SeededLog):
    assert rows == [(len(log.exchanges), len({e.conversation_id for e in log.exchanges}))]


def check_feedback(columns, rows, log: SeededLog):
    assert rows == [(log.feedback.count(1), log.feedback.count(-1))]
    assert log.feedback.count(1) and log.feedback.count(-1)


def check_feedback_rate(columns, rows, log: SeededLog):
    assert rows[0][0] == pytest.approx(len(log.feedback) / len(log.exchanges))


def check_error_rate(columns, rows, log: SeededLog):
    errors = sum(e.status != "ok" for e in log.exchanges)
    assert errors and rows[0][1] == errors
    assert rows[0][0] == pytest.approx(errors / len(log.exchanges))


def check_cost(columns, rows, log: SeededLog):
    total = _total(e.cost for e in log.exchanges) + _total(e.judge_cost for e in log.exchanges)
    assert float(rows[0][0]) == pytest.approx(total)
    assert rows[0][1] == sum(e.cost is None for e in log.exchanges) > 0


def check_cost_over_time(columns, rows, log: SeededLog):
    assert _total(_column(columns, rows, "answers")) == pytest.approx(
        _total(e.cost for e in log.exchanges))
    assert _total(_column(columns, rows, "judge")) == pytest.approx(
        _total(e.judge_cost for e in log.exchanges))


def check_tokens(columns, rows, log: SeededLog):
    for column, attr in (("prompt", "prompt_tokens"), ("completion", "completion_tokens"),
                         ("judge", "judge_total_tokens")):
        assert _total(_column(columns, rows, column)) == _total(
            getattr(e, attr) for e in log.exchanges) > 0


def check_response_time(columns, rows, log: SeededLog):
    buckets: dict[int, list[float]] = {}
    for e in log.exchanges:
        buckets.setdefault(_bucket(e.created_at, INTERVAL), []).append(e.response_time)
    assert [int(t) for t in _column(columns, rows, "time")] == sorted(buckets)
    for row in rows:
        values = buckets[int(row[0])]
        assert row[1] == pytest.approx(sum(values) / len(values))
        assert row[2] == pytest.approx(_percentile_cont(values, 0.95))


def check_latency(columns, rows, log: SeededLog):
    llm = [e.llm_time for e in log.exchanges if e.llm_time is not None]
    assert max(v for v in _column(columns, rows, "llm") if v is not None) <= max(llm)
    assert len(rows) == len({_bucket(e.created_at, INTERVAL) for e in log.exchanges})


def check_relevance(columns, rows, log: SeededLog):
    expected = Counter(e.relevance or "not judged" for e in log.exchanges)
    assert _by_label(columns, rows) == expected
    assert set(expected) == {*RELEVANCE_VALUES, "not judged"}


def check_mode(columns, rows, log: SeededLog):
    assert _by_label(columns, rows) == Counter(e.mode or "unknown" for e in log.exchanges)


def check_model(columns, rows, log: SeededLog):
    assert _by_label(columns, rows) == Counter(e.model or "none" for e in log.exchanges)


def check_last_conversations(columns, rows, log: SeededLog):
    newest = sorted(log.exchanges, key=lambda e: e.created_at, reverse=True)
    assert len(rows) == len(newest)
    assert [r[0] for r in rows] == [e.created_at for e in newest]
    assert [r[1] for r in rows] == [e.question for e in newest]
    assert [r[3] for r in rows] == [e.relevance or "not judged" for e in newest]


def check_errors_by_status(columns, rows, log: SeededLog):
    counts = Counter(e.status for e in log.exchanges if e.status != "ok")
    assert _by_label(columns, rows) == counts
    for status, _, last_seen, last_error in rows:
        latest = max((e for e in log.exchanges if e.status == status), key=lambda e: e.created_at)
        assert (last_seen, last_error) == (latest.created_at, latest.error)


def check_content_gaps(columns, rows, log: SeededLog):
    latest = {}
    for e in log.exchanges:  # feedback lands on the latest exchange of its conversation
        if e.conversation_id not in latest or e.turn > latest[e.conversation_id].turn:
            latest[e.conversation_id] = e
    rated_down = {latest[c].id for c in log.thumbs_down}
    gaps = [e for e in log.exchanges
            if e.status == "ok" and (not e.covered or e.id in rated_down)]
    expected = {}
    for e in gaps:
        key = e.question.strip().lower()
        asked, declined, down = expected.get(key, (0, 0, 0))
        expected[key] = (asked + 1, declined + (not e.covered), down + e.covered)
    assert any(not e.covered for e in gaps) and any(e.covered for e in gaps)
    assert {r[0].strip().lower(): (r[1], r[2], r[3]) for r in rows} == expected
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


SEMANTIC_CHECKS = {
    "Questions the blog doesn't cover": check_content_gaps,
    "Exchanges": check_exchanges,
    "Feedback +1 / -1": check_feedback,
    "Feedback rate": check_feedback_rate,
    "Error rate": check_error_rate,
    "LLM cost": check_cost,
    "LLM cost over time": check_cost_over_time,
    "Tokens over time": check_tokens,
    "Response time": check_response_time,
    "Retrieval and LLM latency": check_latency,
    "Relevance of answers": check_relevance,
    "Answer mode": check_mode,
    "Model used": check_model,
    "Last conversations": check_last_conversations,
    "Errors by status": check_errors_by_status,
}


@pytest.mark.parametrize("title", sorted(SEMANTIC_CHECKS))
def test_panel_values_match_the_seeded_exchanges(title, db, seeded):
    case = find_case(title)
    columns, rows = run_sql(db, case.sql, seeded.start, seeded.end)
    SEMANTIC_CHECKS[title](columns, rows, seeded)


def test_seeded_log_is_varied(seeded):
    """The seed exercises what the panels distinguish (else the checks above prove little)."""
    exchanges = seeded.exchanges
    assert 45 <= len(exchanges) <= 60
    assert {e.mode for e in exchanges} == {"llm", "extractive", None}
    assert {e.status for e in exchanges} == {"ok", "llm_error", "engine_error"}
    assert any(e.cost is None for e in exchanges) and any(e.cost for e in exchanges)
    assert any(e.judge_cost is None and e.relevance for e in exchanges)
    assert len({e.model for e in exchanges}) >= 4
    assert max(e.created_at for e in exchanges) - min(e.created_at for e in exchanges) \
        > timedelta(hours=3)


# -- the checks can fail ---------------------------------------------------------------------


def _mutated(title: str, old: str, new: str) -> PanelCase:
    """A copy of a dashboard where one panel's SQL has ``old`` replaced by ``new``."""
    case = find_case(title)
    dashboard = copy.deepcopy(load_dashboard(DASHBOARD_DIR / case.dashboard))
    (mutated,) = [c for c in panel_cases(dashboard, case.dashboard) if c.title == title]
    assert old in mutated.target["rawSql"]
    mutated.target["rawSql"] = mutated.target["rawSql"].replace(old, new)
    return mutated


def test_a_renamed_column_fails(db, seeded):
    broken = _mutated("Response time", "response_time", "response_tme")
    with pytest.raises(psycopg2.errors.UndefinedColumn):
        run_sql(db, broken.sql, seeded.start, seeded.end)
    broken = _mutated("Last conversations", "response_time", "response_tme")
    with pytest.raises(psycopg2.errors.UndefinedColumn):
        run_sql(db, broken.sql, seeded.start, seeded.end)


def test_a_wrong_alias_or_order_fails_the_shape_check(db, seeded):
    renamed = _mutated("Response time", "AS p95", "AS p99")
    with pytest.raises(AssertionError, match="p99"):
        check_shape(renamed, *run_sql(db, renamed.sql, seeded.start, seeded.end))
    unsorted = _mutated("Response time", "ORDER BY 1", "ORDER BY 1 DESC")
    with pytest.raises(AssertionError, match="sorted"):
        check_shape(unsorted, *run_sql(db, unsorted.sql, seeded.start, seeded.end))
    empty = _mutated("Relevance of answers", "GROUP BY 1", "AND false GROUP BY 1")
    with pytest.raises(AssertionError, match="no rows"):
        check_shape(empty, *run_sql(db, empty.sql, seeded.start, seeded.end))


def test_a_missing_time_filter_fails(db, seeded):
    leaky = _mutated("Exchanges", "WHERE $__timeFilter(created_at)", "")
    with pytest.raises(AssertionError):
        test_query_reads_the_time_range_with_grafana_macros(leaky)
    with pytest.raises(AssertionError):
        check_exchanges(*run_sql(db, leaky.sql, seeded.start, seeded.end), seeded)


def test_local_time_bucketing_fails_the_time_zone_check(db, seeded):
    local = _mutated("Response time", "$__timeGroupAlias(created_at, $__interval)",
                     "date_trunc('hour', created_at) AS time")
    with pytest.raises(AssertionError):
        test_query_reads_the_time_range_with_grafana_macros(local)
    with pytest.raises(AssertionError, match="Asia/Kathmandu"):
        test_panel_does_not_depend_on_the_session_time_zone(local, db, seeded)
