"""住民票の写し (certified copy of a resident record) rendered as a one-page PDF.

reportlab's built-in Japanese CID fonts (HeiseiMin-W3, HeiseiKakuGo-W5)
need no font files: the PDF names the font and the viewer supplies it, so
certificates stay small (a few KB) as on a real system that prints on
pre-printed security paper. Because CID text is encoded, the resident id,
names and certificate number are also written into the PDF metadata, where
tools (and tests) can read them without a PDF text extractor.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from datetime import date

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

from backoffice.towns import Town

MINCHO = "HeiseiMin-W3"
GOTHIC = "HeiseiKakuGo-W5"
LATIN = "Helvetica"
pdfmetrics.registerFont(UnicodeCIDFont(MINCHO))
pdfmetrics.registerFont(UnicodeCIDFont(GOTHIC))

# reportlab is not documented as thread-safe (module-level caches); rendering
# takes a few milliseconds, so serialising it costs little.
_RENDER_LOCK = threading.Lock()

_ERAS = (  # (first day, name)
    (date(2019, 5, 1), "令和"),
    (date(1989, 1, 8), "平成"),
    (date(1926, 12, 25), "昭和"),
    (date(1912, 7, 30), "大正"),
    (date(1868, 10, 23), "明治"),
)


def wareki(day: date) -> str:
    """A date in the Japanese era calendar, as printed on certificates."""
    for start, era in _ERAS:
        if day >= start:
            year = day.year - start.year + 1
            year_text = "元" if year == 1 else str(year)
            return f"{era}{year_text}年{day.month}月{day.day}日"
    return f"{day.year}年{day.month}月{day.day}日"


def _row(
    c: canvas.Canvas,
    y: float,
    label: str,
    value: str,
    ruby: str | None = None,
    font: str = MINCHO,
) -> float:
    """One ruled row of the certificate table; returns the y of the next row."""
    height = 16 * mm if ruby else 11 * mm
    left, label_w, right = 20 * mm, 38 * mm, A4[0] - 20 * mm
    c.rect(left, y - height, right - left, height)
    c.line(left + label_w, y, left + label_w, y - height)
    c.setFont(GOTHIC, 10)
    c.drawString(left + 3 * mm, y - height / 2 - 1.5 * mm, label)
    if ruby:
        c.setFont(MINCHO, 8)
        c.drawString(left + label_w + 4 * mm, y - 5 * mm, ruby)
    c.setFont(font, 12)
    c.drawString(left + label_w + 4 * mm, y - height + 4 * mm, value)
    return float(y - height)


def render_juminhyo(
    resident: Mapping[str, object],
    household: Sequence[Mapping[str, object]],
    *,
    town: Town,
    certificate_number: str,
    issued_on: date,
) -> bytes:
    """Render one resident's 住民票の写し and return the PDF bytes."""
    family, given = str(resident["family_name"]), str(resident["given_name"])
    kana = f"{resident['family_kana']} {resident['given_kana']}"
    head = next((m for m in household if m["relationship"] == "世帯主"), resident)
    born = date.fromisoformat(str(resident["birth_date"]))
    registered = date.fromisoformat(str(resident["registered_on"]))
    mayor = f"{town.name}長"

    buf = io.BytesIO()
    with _RENDER_LOCK:
        c = canvas.Canvas(buf, pagesize=A4, pageCompression=1)
        c.setTitle(f"住民票の写し {family} {given}")
        c.setSubject(f"resident {resident['resident_id']} / {family} {given} ({kana})")
        c.setAuthor(mayor)
        c.setKeywords(f"certificate {certificate_number}; town {town.id}")
        c.setCreator("loadprobe reference data-center application")

        width, top = A4[0], A4[1] - 25 * mm
        c.setFont(GOTHIC, 20)
        c.drawCentredString(width / 2, top, "住民票の写し")
        # Ids in Helvetica: the CID fonts' Latin glyphs are proportional and uneven.
        c.setFont(LATIN, 9)
        c.drawRightString(width - 20 * mm, top - 10 * mm, certificate_number)
        c.setFont(MINCHO, 9)
        c.drawRightString(
            width - 22 * mm - c.stringWidth(certificate_number, LATIN, 9),
            top - 10 * mm,
            "証明書番号",
        )

        y = top - 16 * mm
        y = _row(c, y, "住所", f"〒{resident['postal_code']} {resident['address']}")
        y = _row(c, y, "世帯主", f"{head['family_name']} {head['given_name']}")
        y = _row(c, y, "氏名", f"{family} {given}", ruby=kana)
        sex = "男" if resident["sex"] == "M" else "女"
        y = _row(c, y, "生年月日", f"{wareki(born)}（{born.isoformat()}）  性別 {sex}")
        y = _row(c, y, "続柄", str(resident["relationship"]))
        y = _row(c, y, "住民となった日", wareki(registered))
        y = _row(c, y, "世帯番号", str(resident["household_id"]), font=LATIN)
        y = _row(c, y, "住民票コード", str(resident["resident_id"]), font=LATIN)

        c.setFont(MINCHO, 11)
        c.drawString(20 * mm, y - 14 * mm, "この写しは、住民票の原本と相違ないことを証明する。")
        c.drawString(20 * mm, y - 24 * mm, wareki(issued_on))
        c.setFont(MINCHO, 13)
        region = town.address_prefix.removesuffix(town.name)
        c.drawRightString(width - 45 * mm, y - 36 * mm, region)
        c.drawRightString(width - 45 * mm, y - 44 * mm, mayor)
        # The mayor's seal (職印), printed in red as on the real form.
        c.setStrokeColor(colors.red)
        c.setFillColor(colors.red)
        seal_x, seal_y = width - 40 * mm, y - 50 * mm
        c.rect(seal_x, seal_y, 18 * mm, 18 * mm)
        c.setFont(MINCHO, 9)
        c.drawCentredString(seal_x + 9 * mm, seal_y + 10 * mm, town.name)
        c.drawCentredString(seal_x + 9 * mm, seal_y + 5 * mm, "長之印")
        c.setFillColor(colors.grey)
        c.setFont(GOTHIC, 8)
        c.drawString(
            20 * mm,
            15 * mm,
            "loadprobe 参照アプリケーションの出力見本です。"
            "記載の人物は合成データであり実在しません。",
        )
        c.showPage()
        c.save()
    return buf.getvalue()
