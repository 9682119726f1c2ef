"""Pure pieces of the reference application: no server, no sockets."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import date, datetime
from itertools import islice
from pathlib import Path

import pytest

import backoffice
import loadprobe
from backoffice.auth import SessionStore, check_credentials, terminal_users
from backoffice.bundle import build_bundle, etag_matches
from backoffice.certificate import wareki
from backoffice.kana import hiragana_to_katakana, normalize_kana, normalize_name
from backoffice.ledger import SCHEMA_VERSION, Ledger, LedgerError, open_ledger
from backoffice.seeding import REFERENCE_DATE, generate_town
from backoffice.tax import (
    EXEMPT,
    employment_income,
    per_capita_levy,
    resident_tax,
)
from backoffice.towns import TOTAL_POPULATION, TOWNS, TOWNS_BY_ID, Town
from netwatch.topology import load

# --- towns and seeding ----------------------------------------------------------------


def test_town_facts() -> None:
    assert [(t.id, t.name, t.population) for t in TOWNS] == [
        ("nishiki", "錦町", 11_407),
        ("takaharu", "高原町", 9_847),
        ("tsuno", "都農町", 11_130),
        ("kawaminami", "川南町", 16_905),
    ]
    assert TOTAL_POPULATION == 49_289
    assert TOWNS_BY_ID["nishiki"].prefecture == "熊本県"


def test_towns_agree_with_topology_yaml() -> None:
    # The application keeps its own copy of the towns so that it runs without
    # netwatch; topology.yaml stays the source of truth.
    topology = load(Path(__file__).resolve().parents[1] / "topology.yaml")
    assert [(t.id, t.name, t.prefecture_en, t.population) for t in TOWNS] == [
        (t.id, t.name, t.prefecture, t.population) for t in topology.towns
    ]


def test_version_is_the_project_version() -> None:
    assert backoffice.__version__ == loadprobe.__version__


@pytest.mark.parametrize("town", TOWNS, ids=lambda t: t.id)
def test_seeding_yields_exactly_the_population(town: Town) -> None:
    rows = list(generate_town(town))
    assert len(rows) == town.population
    assert len({row.resident_id for row in rows}) == len(rows)
    assert all(row.birth_date <= REFERENCE_DATE for row in rows)
    assert all(row.birth_date <= row.registered_on <= REFERENCE_DATE for row in rows)


def test_seeding_is_deterministic() -> None:
    town = TOWNS_BY_ID["tsuno"]
    first = list(islice(generate_town(town, seed=7), 200))
    assert first == list(islice(generate_town(town, seed=7), 200))
    assert first != list(islice(generate_town(town, seed=8), 200))
    assert first[0].resident_id == "tsuno-0000001"
    assert first[0].relationship == "世帯主"


def test_households_share_name_and_address() -> None:
    rows = list(islice(generate_town(TOWNS_BY_ID["nishiki"]), 2_000))
    households: dict[str, set[tuple[str, str]]] = {}
    for row in rows:
        households.setdefault(row.household_id, set()).add((row.family_name, row.address))
        assert row.address.startswith("熊本県球磨郡錦町大字")
        assert all("ァ" <= ch <= "ヶ" or ch == "ー" for ch in row.family_kana + row.given_kana)
    assert all(len(members) == 1 for members in households.values())
    assert len(households) > 500  # real households, not one big family


def test_ledger_seeds_once_and_is_identical_for_the_same_seed(tmp_path: Path) -> None:
    info = open_ledger(tmp_path / "a.sqlite3")
    assert info.created
    assert info.residents_by_town == {t.id: t.population for t in TOWNS}
    assert not open_ledger(tmp_path / "a.sqlite3").created  # reused on the next start
    other = open_ledger(tmp_path / "b.sqlite3")

    def dump(path: Path) -> list[tuple[object, ...]]:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return conn.execute("SELECT * FROM residents ORDER BY resident_id").fetchall()

    assert dump(info.path) == dump(other.path)
    assert not list(tmp_path.glob("*.tmp"))


def test_ledger_search_issuance_and_schema_check(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    open_ledger(path)
    ledger = Ledger(path)
    page = ledger.search("takaharu", kana="クロキ", name=None, limit=5, offset=0)
    assert page.total > 5
    assert [row["family_kana"] for row in page.rows] == ["クロキ"] * 5
    assert ledger.search("takaharu", kana=None, name="黒木", limit=1, offset=0).total == page.total
    assert ledger.get("takaharu", "nishiki-0000001") is None  # other town
    numbers = [
        ledger.log_issuance(
            town="takaharu",
            resident_id="takaharu-0000001",
            kind="juminhyo",
            user="takaharu-t01",
            issued_at=datetime(2012, 3, 1, 9),
        )
        for _ in range(3)
    ]
    assert numbers == ["takaharu-C0000001", "takaharu-C0000002", "takaharu-C0000003"]
    assert ledger.ping()
    ledger.conn.close()

    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError, match=f"needs '{SCHEMA_VERSION}'"):
        open_ledger(path)


def test_ledger_errors_are_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(LedgerError) as exc:
        open_ledger(blocker / "ledger.sqlite3")
    assert "\n" not in str(exc.value)
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match=r"garbage\.sqlite3"):
        open_ledger(garbage)


# --- kana -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("やまだ", "ヤマダ"),
        ("ヤマダ", "ヤマダ"),
        ("ﾔﾏﾀﾞ", "ヤマダ"),  # half-width, voiced mark composed
        ("やまだ　たろう", "ヤマダタロウ"),
        ("ヤマダ タロウ", "ヤマダタロウ"),
        ("きょうこ", "キョウコ"),
        ("ゔ", "ヴ"),
        ("ヤマダー", "ヤマダー"),
    ],
)
def test_normalize_kana(typed: str, key: str) -> None:
    assert normalize_kana(typed) == key


def test_hiragana_range_only() -> None:
    assert hiragana_to_katakana("ぁゖ漢字abc") == "ァヶ漢字abc"


def test_normalize_name() -> None:
    assert normalize_name("山田　太郎") == "山田太郎"
    assert normalize_name("ＡＢＣ 山田") == "ABC山田"


# --- tax --------------------------------------------------------------------------------


def test_salary_and_pension_deductions() -> None:
    assert employment_income(1_000_000, "salary") == 450_000  # 550,000 minimum deduction
    assert employment_income(5_000_000, "salary") == 5_000_000 - 1_440_000
    assert employment_income(20_000_000, "salary") == 20_000_000 - 1_950_000
    assert employment_income(1_000_000, "pension") == 0
    assert employment_income(2_000_000, "pension") == 900_000
    assert employment_income(5_000_000, "none") == 0


def test_resident_tax_worked_example() -> None:
    # Salary 4,000,000: income 2,760,000; social insurance 600,000; taxable
    # 2,760,000 - 430,000 - 600,000 = 1,730,000; levies 103,800 - 1,500 and
    # 69,200 - 1,000; per-capita 3,500 + 1,500 (FY2020).
    tax = resident_tax(4_000_000, "salary", 2020)
    assert tax.income == 2_760_000
    assert tax.taxable == 1_730_000
    assert tax.municipal == 102_300 + 3_500
    assert tax.prefectural == 68_200 + 1_500
    assert tax.total == 175_500


def test_resident_tax_exemption_and_progressivity() -> None:
    assert resident_tax(1_000_000, "salary", 2012) == EXEMPT
    assert resident_tax(0, "none", 2012).total == 0
    rates = [resident_tax(g, "salary", 2012).total / g for g in (2_000_000, 5_000_000, 10_000_000)]
    assert rates == sorted(rates)
    assert resident_tax(10_000_000, "salary", 2012).total > 0


def test_per_capita_levy_by_fiscal_year() -> None:
    assert per_capita_levy(2012) == (3_000, 1_000)
    assert per_capita_levy(2014) == (3_500, 1_500)
    assert per_capita_levy(2024) == (4_000, 1_000)


# --- sessions, credentials ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_expire_after_ttl() -> None:
    clock = FakeClock()
    store = SessionStore(60, clock=clock)
    session = store.create("nishiki-t01", "nishiki")
    assert store.get(session.token) == session
    assert store.active_by_town()["nishiki"] == 1
    clock.now += 59.9
    assert store.get(session.token) is not None
    clock.now += 0.1
    assert store.get(session.token) is None
    assert store.active_by_town()["nishiki"] == 0


def test_revoke_and_unknown_tokens() -> None:
    store = SessionStore(60, clock=FakeClock())
    session = store.create("tsuno-t02", "tsuno")
    assert store.get("nope") is None
    assert store.revoke(session.token)
    assert not store.revoke(session.token)
    assert store.get(session.token) is None
    with pytest.raises(ValueError, match="positive"):
        SessionStore(0)


def test_check_credentials() -> None:
    assert terminal_users("tsuno")[-1] == "tsuno-t10"
    assert check_credentials("tsuno", "tsuno-t10", "pw", "pw")
    assert not check_credentials("tsuno", "tsuno-t10", "PW", "pw")
    assert not check_credentials("nishiki", "tsuno-t10", "pw", "pw")
    assert not check_credentials("tsuno", "tsuno-t11", "pw", "pw")
    assert not check_credentials("atlantis", "atlantis-t01", "pw", "pw")


# --- bundle, certificate helpers -----------------------------------------------------------


def test_bundle_is_deterministic_and_sized_like_a_client() -> None:
    first, second = build_bundle(), build_bundle()
    assert first.manifest.body == second.manifest.body
    assert first.version == second.version
    assert 200_000 < first.total_bytes < 1_000_000


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        ("*", True),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ('"abcd"', False),
    ],
)
def test_etag_matches(header: str | None, matches: bool) -> None:
    assert etag_matches(header, '"abc"') is matches


@pytest.mark.parametrize(
    ("day", "text"),
    [
        (date(2012, 3, 1), "平成24年3月1日"),
        (date(1989, 1, 7), "昭和64年1月7日"),
        (date(1989, 1, 8), "平成元年1月8日"),
        (date(2019, 5, 1), "令和元年5月1日"),
        (date(1916, 3, 26), "大正5年3月26日"),
    ],
)
def test_wareki(day: date, text: str) -> None:
    assert wareki(day) == text
