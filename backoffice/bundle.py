"""The client's start-up bundle: what a terminal downloads at application start.

A real back-office client pulls its screen definitions, code tables, a
script bundle and icon/font data before logon, a few hundred KB that the
degraded (ADSL) path has to carry at every start unless the client cache
revalidates them (ETag → 304). The content is generated deterministically,
so the ETags are stable across restarts and machines.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

from backoffice import __version__
from backoffice.towns import BUSINESS_SYSTEMS, TOWNS

# Assets change only with the release, but the client must notice a release at
# once: the manifest is always revalidated, the assets may be cached for a day.
MANIFEST_CACHE_CONTROL = "no-cache"
ASSET_CACHE_CONTROL = "public, max-age=86400"

_FIELD_KINDS = ("text", "kana", "date", "code", "number", "yen", "address")
_SCREENS = ("照会", "登録", "変更", "削除", "一覧", "帳票出力", "異動履歴", "統計")
_FIELD_LABELS = (
    "宛名番号",
    "氏名",
    "氏名カナ",
    "生年月日",
    "性別",
    "続柄",
    "世帯番号",
    "住所",
    "方書",
    "郵便番号",
    "異動日",
    "届出日",
    "異動事由",
    "課税年度",
    "税額",
    "納期",
    "口座番号",
    "証明書番号",
    "備考",
    "担当者",
    "処理日",
    "資格取得日",
    "資格喪失日",
    "等級",
)


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    content_type: str
    body: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def etag(self) -> str:
        return f'"{self.sha256[:32]}"'


def _json(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def _forms(rng: random.Random) -> bytes:
    forms = []
    for code, name_ja, _ in BUSINESS_SYSTEMS:
        for screen_no, screen in enumerate(_SCREENS, start=1):
            fields = [
                {
                    "id": f"{code.lower()}_{screen_no:02d}_{field_no:02d}",
                    "label": label,
                    "kind": rng.choice(_FIELD_KINDS),
                    "required": rng.random() < 0.4,
                    "max_length": rng.choice((8, 10, 20, 40, 60, 120)),
                    "tab_order": field_no,
                }
                for field_no, label in enumerate(rng.sample(_FIELD_LABELS, 10), start=1)
            ]
            forms.append(
                {
                    "form_id": f"{code}-{screen_no:02d}",
                    "system": code,
                    "title": f"{name_ja}{screen}",
                    "fields": fields,
                    "print_layout": f"{code}-{screen_no:02d}.frm" if screen == "帳票出力" else None,
                }
            )
    return _json({"schema": 1, "forms": forms})


def _code_tables() -> bytes:
    return _json(
        {
            "schema": 1,
            "business_systems": [
                {"code": code, "name_ja": ja, "name_en": en} for code, ja, en in BUSINESS_SYSTEMS
            ],
            "towns": [
                {
                    "id": town.id,
                    "name": town.name,
                    "kana": town.kana,
                    "prefecture": town.prefecture,
                    "district": town.district,
                    "areas": [
                        {"name": a.name, "kana": a.kana, "postal_code": a.postal_code}
                        for a in town.areas
                    ],
                }
                for town in TOWNS
            ],
            "relationship": {
                "01": "世帯主",
                "02": "妻",
                "03": "夫",
                "04": "子",
                "05": "母",
                "06": "父",
                "07": "孫",
                "99": "その他",
            },
            "sex": {"1": "男", "2": "女"},
            "eras": [
                {"name": "明治", "start": "1868-01-25"},
                {"name": "大正", "start": "1912-07-30"},
                {"name": "昭和", "start": "1926-12-25"},
                {"name": "平成", "start": "1989-01-08"},
                {"name": "令和", "start": "2019-05-01"},
            ],
            "certificate_kinds": {"juminhyo": "住民票の写し"},
            "batch_kinds": {"tax-recalc": "個人住民税 税額再計算"},
        }
    )


def _script(rng: random.Random) -> bytes:
    """A minified-looking client script: one render and one validate function per screen."""
    parts = ['/* loadprobe reference client bundle (synthetic) */\n"use strict";\n']
    for code, _, _ in BUSINESS_SYSTEMS:
        for screen_no in range(1, len(_SCREENS) + 1):
            fid = f"{code}_{screen_no:02d}"
            checks = ";".join(
                f"if(!v.f{n}||v.f{n}.length>{rng.choice((8, 20, 40, 120))})e.push('f{n}')"
                for n in range(1, 11)
            )
            parts.append(
                f"function render_{fid}(c,d){{var r=c.root('{fid}');"
                f"for(var i=0;i<d.fields.length;i++){{var f=d.fields[i];r.append(c.field(f.id,"
                f"f.label,f.kind,{{max:f.max_length,req:f.required,tab:f.tab_order}}))}}"
                f"r.bind('submit',function(v){{return validate_{fid}(v)}});return r}}\n"
                f"function validate_{fid}(v){{var e=[];{checks};return e}}\n"
            )
    parts.append(f"var BUILD='{rng.getrandbits(64):016x}';\n")
    return "".join(parts).encode()


def build_assets(seed: int = 2012) -> dict[str, Asset]:
    rng = random.Random(seed)
    assets = (
        Asset("forms.json", "application/json", _forms(rng)),
        Asset("code-tables.json", "application/json", _code_tables()),
        Asset("app.js", "text/javascript; charset=utf-8", _script(rng)),
        # Icons and an embedded font subset: binary and incompressible.
        Asset("icons.bin", "application/octet-stream", rng.randbytes(96 * 1024)),
    )
    return {asset.name: asset for asset in assets}


@dataclass(frozen=True, slots=True)
class Bundle:
    version: str
    assets: dict[str, Asset]
    manifest: Asset  # the manifest's own JSON, served with its own ETag

    @property
    def total_bytes(self) -> int:
        return sum(len(asset.body) for asset in self.assets.values())


def build_bundle() -> Bundle:
    assets = build_assets()
    digest = hashlib.sha256("".join(a.sha256 for a in assets.values()).encode()).hexdigest()
    version = f"{__version__}+{digest[:12]}"
    manifest = {
        "version": version,
        "assets": [
            {
                "name": a.name,
                "size": len(a.body),
                "sha256": a.sha256,
                "content_type": a.content_type,
            }
            for a in assets.values()
        ],
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()
    return Bundle(version, assets, Asset("manifest", "application/json", body))


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of tags or `*`."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))
