"""Deterministic synthetic population: households of plausible residents.

Each town gets its own random stream derived from (seed, town id), so the
rows of one town do not shift when another town's population changes, and
the same seed always yields the same ledger. Dates are relative to the
go-live day of the shared system (1 March 2012), never to today.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from backoffice.names import FAMILY_NAMES, FEMALE_NAMES, MALE_NAMES, cohort
from backoffice.towns import Town

DEFAULT_SEED = 20120301
REFERENCE_DATE = date(2012, 3, 1)

_HOUSEHOLD_SIZES = (1, 2, 3, 4, 5, 6)
_HOUSEHOLD_WEIGHTS = (28, 31, 18, 13, 7, 3)  # rural Kyushu: many one- and two-person homes
_FAMILY_WEIGHTS = tuple(weight for _, _, weight in FAMILY_NAMES)


@dataclass(frozen=True, slots=True)
class ResidentRow:
    resident_id: str
    town: str
    household_id: str
    relationship: str  # 続柄: 世帯主, 妻, 夫, 子, 母, 孫
    family_name: str
    given_name: str
    family_kana: str
    given_kana: str
    sex: str  # "M" | "F"
    birth_date: date
    postal_code: str
    address: str
    registered_on: date
    income: int  # gross yen of the previous calendar year
    income_kind: str  # "salary" | "pension" | "none"


@dataclass(frozen=True, slots=True)
class _Member:
    relationship: str
    sex: str
    age: int


def _household(rng: random.Random, size: int) -> list[_Member]:
    """Head first, then spouse, a parent of the head, children or grandchildren."""
    head_age = rng.randint(20, 95) if size == 1 else rng.randint(27, 85)
    head_sex = "M" if rng.random() < 0.8 else "F"
    members = [_Member("世帯主", head_sex, head_age)]
    if size >= 2 and rng.random() < 0.85:
        spouse_age = max(18, head_age - rng.randint(-3, 6) if head_sex == "M" else head_age + 2)
        members.append(
            _Member("妻" if head_sex == "M" else "夫", "F" if head_sex == "M" else "M", spouse_age)
        )
    if len(members) < size and head_age <= 55 and rng.random() < 0.25:
        members.append(_Member("母", "F", head_age + rng.randint(22, 35)))
    while len(members) < size:
        # Old heads live with grandchildren more often than with young children.
        relation = "孫" if head_age >= 62 and rng.random() < 0.6 else "子"
        gap = rng.randint(22, 40) * (2 if relation == "孫" else 1)
        age = max(0, head_age - gap + rng.randint(-5, 5))
        members.append(_Member(relation, rng.choice("MF"), age))
    return members


def _birth_date(rng: random.Random, age: int) -> date:
    return REFERENCE_DATE - timedelta(days=age * 365 + rng.randrange(365))


def _round_yen(amount: float) -> int:
    return int(amount // 1_000) * 1_000


def _income(rng: random.Random, member: _Member) -> tuple[int, str]:
    """Previous year's gross income and its kind, by age and sex (2012 patterns)."""
    age = member.age
    if age < 15:
        return 0, "none"
    if age < 23:
        if rng.random() < 0.15:
            return _round_yen(rng.uniform(600_000, 1_500_000)), "salary"
        return 0, "none"
    if age < 65:
        employed = rng.random() < (0.88 if member.sex == "M" else 0.66)
        if not employed:
            return 0, "none"
        median = 3_600_000 if member.sex == "M" else 2_000_000
        return _round_yen(median * rng.lognormvariate(0.0, 0.45)), "salary"
    if rng.random() < 0.1:
        return 0, "none"
    return _round_yen(1_600_000 * rng.lognormvariate(0.0, 0.5)), "pension"


def generate_town(town: Town, seed: int = DEFAULT_SEED) -> Iterator[ResidentRow]:
    """Yield exactly `town.population` residents of `town`, in resident-id order."""
    rng = random.Random(f"{seed}:{town.id}")
    count = 0
    household_no = 0
    while count < town.population:
        household_no += 1
        size = min(town.population - count, rng.choices(_HOUSEHOLD_SIZES, _HOUSEHOLD_WEIGHTS)[0])
        family, family_kana, _ = rng.choices(FAMILY_NAMES, _FAMILY_WEIGHTS)[0]
        area = rng.choice(town.areas)
        lot = f"{rng.randint(1, 4999)}番地"
        if rng.random() < 0.5:
            lot += str(rng.randint(1, 30))
        address = f"{town.address_prefix}大字{area.name}{lot}"
        # None: the family was born in town; otherwise the day it moved in.
        moved_in = (
            None
            if rng.random() < 0.55
            else date(1970, 1, 1) + timedelta(days=rng.randrange(15_400))
        )
        for member in _household(rng, size):
            count += 1
            born = _birth_date(rng, member.age)
            names = MALE_NAMES if member.sex == "M" else FEMALE_NAMES
            given, given_kana = rng.choice(names[cohort(born.year)])
            income, income_kind = _income(rng, member)
            yield ResidentRow(
                resident_id=f"{town.id}-{count:07d}",
                town=town.id,
                household_id=f"{town.id}-H{household_no:06d}",
                relationship=member.relationship,
                family_name=family,
                given_name=given,
                family_kana=family_kana,
                given_kana=given_kana,
                sex=member.sex,
                birth_date=born,
                postal_code=area.postal_code,
                address=address,
                registered_on=born if moved_in is None else max(born, moved_in),
                income=income,
                income_kind=income_kind,
            )
