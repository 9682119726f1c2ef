"""Individual resident tax (個人住民税), simplified but shaped like the real one.

The flat 10 % income levy (所得割: 6 % municipal, 4 % prefectural) applies
after deductions whose tables are bracketed, so the effective rate rises
with income. On top comes the per-capita levy (均等割), whose amount
depends on the fiscal year. Left out on purpose: dependants, the many
itemised deductions and tax credits besides the adjustment credit.
Amounts are in yen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IncomeKind = Literal["salary", "pension", "none"]

BASIC_DEDUCTION = 430_000  # 基礎控除 for resident tax (since FY2021)
NON_TAXABLE_INCOME = 450_000  # 非課税限度額 for a single person (simplified)
SOCIAL_INSURANCE_RATE = 0.15  # 社会保険料控除, approximated from gross salary
ADJUSTMENT_CREDIT = (1_500, 1_000)  # 調整控除 (municipal, prefectural), typical case
INCOME_LEVY_RATE = (0.06, 0.04)  # 所得割 (municipal, prefectural)

# (upper bound of gross, rate, fixed part): deduction = gross * rate + fixed
_SALARY_DEDUCTION = (  # 給与所得控除 (since 2020)
    (1_625_000, 0.0, 550_000),
    (1_800_000, 0.40, -100_000),
    (3_600_000, 0.30, 80_000),
    (6_600_000, 0.20, 440_000),
    (8_500_000, 0.10, 1_100_000),
)
_SALARY_DEDUCTION_MAX = 1_950_000
_PENSION_DEDUCTION = (  # 公的年金等控除, age 65+, other income up to 10M yen
    (3_300_000, 0.0, 1_100_000),
    (4_100_000, 0.25, 275_000),
    (7_700_000, 0.15, 685_000),
    (10_000_000, 0.05, 1_455_000),
)
_PENSION_DEDUCTION_MAX = 1_955_000


@dataclass(frozen=True, slots=True)
class ResidentTax:
    income: int  # 所得: gross minus the salary/pension deduction
    taxable: int  # 課税標準, rounded down to 1,000 yen
    income_levy: int  # 所得割
    per_capita_levy: int  # 均等割
    municipal: int
    prefectural: int

    @property
    def total(self) -> int:
        return self.municipal + self.prefectural


EXEMPT = ResidentTax(0, 0, 0, 0, 0, 0)


def per_capita_levy(fiscal_year: int) -> tuple[int, int]:
    """均等割 (municipal, prefectural) for a fiscal year.

    FY2014-2023 carried a 500 + 500 yen reconstruction surcharge; from FY2024
    the 1,000 yen forest environment tax is collected with it instead.
    """
    if fiscal_year <= 2013:
        return 3_000, 1_000
    if fiscal_year <= 2023:
        return 3_500, 1_500
    return 4_000, 1_000


def _bracket(gross: int, table: tuple[tuple[int, float, int], ...], ceiling: int) -> int:
    for upper, rate, fixed in table:
        if gross <= upper:
            return int(gross * rate) + fixed
    return ceiling


def employment_income(gross: int, kind: IncomeKind) -> int:
    """所得: gross receipts less the bracketed salary or pension deduction."""
    if kind == "salary":
        return max(0, gross - _bracket(gross, _SALARY_DEDUCTION, _SALARY_DEDUCTION_MAX))
    if kind == "pension":
        return max(0, gross - _bracket(gross, _PENSION_DEDUCTION, _PENSION_DEDUCTION_MAX))
    return 0


def _floor(amount: float, unit: int) -> int:
    return int(amount // unit) * unit


def resident_tax(gross: int, kind: IncomeKind, fiscal_year: int) -> ResidentTax:
    """Compute one resident's tax for `fiscal_year` from last year's gross."""
    income = employment_income(gross, kind)
    if income <= NON_TAXABLE_INCOME:
        return EXEMPT
    social = int(gross * SOCIAL_INSURANCE_RATE) if kind == "salary" else 0
    taxable = _floor(max(0, income - BASIC_DEDUCTION - social), 1_000)
    muni_levy = max(0, _floor(taxable * INCOME_LEVY_RATE[0], 100) - ADJUSTMENT_CREDIT[0])
    pref_levy = max(0, _floor(taxable * INCOME_LEVY_RATE[1], 100) - ADJUSTMENT_CREDIT[1])
    muni_capita, pref_capita = per_capita_levy(fiscal_year)
    return ResidentTax(
        income=income,
        taxable=taxable,
        income_levy=muni_levy + pref_levy,
        per_capita_levy=muni_capita + pref_capita,
        municipal=muni_levy + muni_capita,
        prefectural=pref_levy + pref_capita,
    )
