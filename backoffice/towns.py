"""The four towns and the 22 shared business systems (facts from seed-facts.md).

topology.yaml is the project's source of truth for the towns; the reference
application keeps its own copy so that it can run standalone, e.g. on a
machine that only serves the data center role (it imports no netwatch). A
unit test checks that the two agree on id, name, prefecture and population.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Area:
    """One 大字 (oaza) of a town: the unit of a rural Japanese address."""

    name: str
    kana: str
    postal_code: str


@dataclass(frozen=True, slots=True)
class Town:
    id: str
    name: str
    kana: str
    prefecture: str
    prefecture_en: str
    district: str
    population: int
    areas: tuple[Area, ...]

    @property
    def address_prefix(self) -> str:
        """Prefecture + district + town, the head of every address in the town."""
        return f"{self.prefecture}{self.district}{self.name}"


# Areas and postal codes are plausible stand-ins: the addresses generated from
# them are synthetic and must not be read as real people's addresses.
# A data table: one town to a row reads better than one field to a line.
# fmt: off
TOWNS: tuple[Town, ...] = (
    Town("nishiki", "錦町", "ニシキマチ", "熊本県", "Kumamoto", "球磨郡", 11_407, (
        Area("一武", "イチブ", "868-0301"), Area("西", "ニシ", "868-0302"),
        Area("木上", "キノエ", "868-0303"),
    )),
    Town("takaharu", "高原町", "タカハルチョウ", "宮崎県", "Miyazaki", "西諸県郡", 9_847, (
        Area("西麓", "ニシフモト", "889-4412"), Area("広原", "ヒロワラ", "889-4413"),
        Area("後川内", "ウシロカワウチ", "889-4411"), Area("蒲牟田", "カマムタ", "889-4414"),
    )),
    Town("tsuno", "都農町", "ツノチョウ", "宮崎県", "Miyazaki", "児湯郡", 11_130, (
        Area("川北", "カワキタ", "889-1201"), Area("寺迫", "テラサコ", "889-1202"),
    )),
    Town("kawaminami", "川南町", "カワミナミチョウ", "宮崎県", "Miyazaki", "児湯郡", 16_905, (
        Area("川南", "カワミナミ", "889-1301"), Area("平田", "ヒラタ", "889-1302"),
    )),
)
# fmt: on

TOWNS_BY_ID: dict[str, Town] = {town.id: town for town in TOWNS}
TOTAL_POPULATION = sum(town.population for town in TOWNS)  # 49,289

# The 22 business operations that went live on 1 March 2012, in the order the
# report lists them: (code, Japanese name, English name).
BUSINESS_SYSTEMS: tuple[tuple[str, str, str], ...] = (
    ("JUKI", "住民記録", "Resident records"),
    ("GAIKOKU", "外国人登録", "Foreign resident registration"),
    ("INKAN", "印鑑登録", "Seal registration"),
    ("SENKYO", "選挙", "Elections"),
    ("GAKUREI", "学齢簿", "School-age register"),
    ("ATENA", "住登外・宛名管理", "Non-resident/addressee records"),
    ("KOTEI", "固定資産税", "Fixed asset tax"),
    ("KOJIN", "個人住民税", "Individual resident tax"),
    ("HOJIN", "法人住民税", "Corporate resident tax"),
    ("KOKUHO", "国民健康保険", "National health insurance"),
    ("KEIJI", "軽自動車税", "Light vehicle tax"),
    ("SHUNO", "収納", "Collections"),
    ("TAINO", "滞納管理", "Delinquency management"),
    ("KAIGO", "介護保険", "Long-term-care insurance"),
    ("KOKI", "後期高齢者医療", "Late-stage elderly medical care"),
    ("NENKIN", "国民年金", "National pension"),
    ("JIDO", "児童手当", "Child allowance"),
    ("JUTAKU", "公営住宅家賃", "Public housing rent"),
    ("HOIKU", "保育料", "Nursery fees"),
    ("SUIDO", "上下水道料金", "Water and sewer fees"),
    ("JINJI", "人事給与", "Personnel and payroll"),
    ("ZAIMU", "財務会計", "Financial accounting"),
)
