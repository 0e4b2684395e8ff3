"""MANSCDP bodies (GB/T 28181 Appendix A): decode, parse with the hardened parser, build.

Charsets lie. GB/T 28181-2016 says GB2312; many devices send UTF-8; both kinds declare the
other one. Strict UTF-8 decoding is the sniff: GB2312/GBK Chinese text is almost never valid
UTF-8 (its bytes are pairs in A1–FE, which UTF-8 only allows as lead + continuation in a few
combinations, and then as accented Latin or Cyrillic, never as CJK), whereas UTF-8 Chinese
text *does* decode as GB18030 — into mojibake. So: valid UTF-8 wins unless reading the bytes
as GB18030 (a superset of GB2312 and GBK) gives more CJK, whatever the Content-Type or XML
declaration says; the declaration is reported so a mislabelling device can be counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from ingest.errors import MalformedXml
from ingest.gb28181.errors import BodyCharsetError, ManscdpError
from ingest.xml_safe import parse_xml

MAX_MANSCDP_BYTES = 64 * 1024
CONTENT_TYPE = "Application/MANSCDP+xml"

_XML_DECL = re.compile(rb"^\s*(?:\xef\xbb\xbf)?\s*<\?xml[^>]{0,200}\?>", re.I)
_DECL_ENCODING = re.compile(rb"encoding\s*=\s*[\"']([A-Za-z0-9_.:-]{1,40})[\"']", re.I)
_GB_FAMILY = {"gb2312", "gbk", "gb18030", "cp936", "euc-cn", "x-gbk"}


def _norm_charset(name: str | None) -> str | None:
    if not name:
        return None
    low = name.strip().strip("\"'").lower().replace("_", "-")
    if low in _GB_FAMILY:
        return "gb18030"
    if low in ("utf8", "utf-8"):
        return "utf-8"
    return low


@dataclass(frozen=True, slots=True)
class DecodedBody:
    text: str
    charset: str  # what the bytes really were: "utf-8" or "gb18030" (or a declared other)
    declared: str | None  # the declaration (Content-Type charset, else XML encoding=)
    # True when non-ASCII bytes decided `charset`; an ASCII body only echoes its declaration
    sniffed: bool = False

    @property
    def mislabelled(self) -> bool:
        return self.declared is not None and _norm_charset(self.declared) != self.charset


def decode_body(body: bytes, declared: str | None = None) -> DecodedBody:
    """Decode a MANSCDP body by sniffing, with the declared charset as the fallback."""
    if declared is None:
        decl = _XML_DECL.match(body)
        if decl:
            enc = _DECL_ENCODING.search(decl.group(0))
            if enc:
                declared = enc.group(1).decode("ascii")
    raw = body.removeprefix(b"\xef\xbb\xbf")
    if raw.isascii():
        norm = _norm_charset(declared)
        return DecodedBody(raw.decode("ascii"), norm if norm == "gb18030" else "utf-8", declared)
    as_utf8 = _try_decode(raw, "utf-8")
    as_gb = _try_decode(raw, "gb18030")
    if as_utf8 is not None and (as_gb is None or _cjk_share(as_utf8) >= _cjk_share(as_gb)):
        return DecodedBody(as_utf8, "utf-8", declared, True)
    if as_gb is not None:
        return DecodedBody(as_gb, "gb18030", declared, True)
    # Neither: only a declared other charset that decodes cleanly is believed. Decoding
    # with replacement characters would store names as mojibake, so the body is refused.
    other = _norm_charset(declared)
    if other is not None:
        try:
            return DecodedBody(raw.decode(other), other, declared, True)
        except (LookupError, UnicodeDecodeError):
            pass
    raise BodyCharsetError(
        f"body is neither UTF-8 nor GB18030/GBK/GB2312 (declared {(declared or 'nothing')[:40]})"
    )


def _try_decode(raw: bytes, codec: str) -> str | None:
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        return None


_WIDE = re.compile(r"[^\x00-\x7f]")
_CJK = re.compile("[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")


def _cjk_share(text: str) -> float:
    """Share of the non-ASCII characters that are CJK ideographs, punctuation or fullwidth.

    Short GBK text is sometimes valid UTF-8 too (一 is D2 BB, which UTF-8 reads as Cyrillic
    һ): two-byte UTF-8 never yields CJK, so the reading with more CJK is the real one. UTF-8
    Chinese read as GBK also yields CJK, so ties go to UTF-8.
    """
    # regexes, not a loop over characters: catalogs of thousands of items are sniffed twice
    wide = len(_WIDE.findall(text))
    if not wide:
        return 1.0
    return len(_CJK.findall(text)) / wide


@dataclass(slots=True)
class CatalogItem:
    """One `<Item>` of a Catalog response or NOTIFY, typed where GB/T 28181 fixes the type.

    Numbers that do not parse are None and named in `problems`; the registry side decides
    what a missing value means (level 1 without position → discovery inbox), so nothing is
    dropped here.
    """

    device_id: str
    name: str = ""
    manufacturer: str = ""
    model: str = ""
    owner: str = ""
    civil_code: str = ""
    block: str = ""
    address: str = ""
    parental: int | None = None
    parent_id: str = ""
    business_group_id: str = ""
    safety_way: int | None = None
    register_way: int | None = None
    secrecy: int | None = None
    ip_address: str = ""
    port: int | None = None
    status: str = ""
    longitude: float | None = None
    latitude: float | None = None
    ptz_type: int | None = None
    direction_type: int | None = None
    event: str = ""  # NOTIFY: ADD/DEL/UPDATE/ON/OFF/VLOST/DEFECT
    po_type: int | None = None  # <Info><PoType>, or PointType as some platforms write it
    po_common_name: str = ""
    record_save_days: int | None = None
    install_time: str = ""
    management_unit: str = ""
    contact_info: str = ""
    hfov: float | None = None
    vfov: float | None = None
    max_view_distance: float | None = None
    mac: str = ""
    grassroots_code: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def type_code(self) -> str:
        return self.device_id[10:13] if len(self.device_id) == 20 else ""


@dataclass(slots=True)
class Manscdp:
    """A parsed body: root (Query/Response/Notify/Control), CmdType, SN, DeviceID and the rest."""

    root: str
    cmd_type: str
    sn: int
    device_id: str
    fields: dict[str, str]
    items: list[CatalogItem]
    sum_num: int | None
    decoded: DecodedBody


def _int(item: CatalogItem, name: str, value: str) -> int | None:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        item.problems.append(f"{name} is not an integer")
        return None


def _float(item: CatalogItem, name: str, value: str) -> float | None:
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        item.problems.append(f"{name} is not a number")
        return None
    if number != number or number in (float("inf"), float("-inf")):
        item.problems.append(f"{name} is not a finite number")
        return None
    return number


def _children(el: Any) -> dict[str, str]:
    """Each child element's stripped text by tag, the first of a name winning as `find` does.

    Why: an item has ~35 optional fields; 35 `find`s each scanned the item's children, which
    was a twentieth of the service's CPU at a registration wave.
    """
    out: dict[str, str] = {}
    for child in el:
        tag = child.tag
        if isinstance(tag, str) and tag not in out:
            out[tag] = "" if child.text is None else str(child.text).strip()
    return out


def _item(el: Any) -> CatalogItem:
    f = _children(el)
    g = f.get
    item = CatalogItem(device_id=g("DeviceID", ""))
    item.name = g("Name", "")
    item.manufacturer = g("Manufacturer", "")
    item.model = g("Model", "")
    item.owner = g("Owner", "")
    item.civil_code = g("CivilCode", "")
    item.block = g("Block", "")
    item.address = g("Address", "")
    item.parental = _int(item, "Parental", g("Parental", ""))
    item.parent_id = g("ParentID", "")
    item.business_group_id = g("BusinessGroupID", "")
    item.safety_way = _int(item, "SafetyWay", g("SafetyWay", ""))
    item.register_way = _int(item, "RegisterWay", g("RegisterWay", ""))
    item.secrecy = _int(item, "Secrecy", g("Secrecy", ""))
    item.ip_address = g("IPAddress", "")
    item.port = _int(item, "Port", g("Port", ""))
    item.status = g("Status", "").upper()
    item.longitude = _float(item, "Longitude", g("Longitude", ""))
    item.latitude = _float(item, "Latitude", g("Latitude", ""))
    item.event = g("Event", "").upper()
    info = el.find("Info")
    i = _children(info).get if info is not None else g
    # PTZType/PoType and friends live in <Info> in the standard; some devices flatten them.
    item.ptz_type = _int(item, "PTZType", i("PTZType", "") or g("PTZType", ""))
    item.direction_type = _int(item, "DirectionType", i("DirectionType", ""))
    po = i("PoType", "") or i("PointType", "") or g("PoType", "")
    item.po_type = _int(item, "PoType", po)
    item.po_common_name = i("PoCommonName", "")
    item.record_save_days = _int(item, "RecordSaveDays", i("RecordSaveDays", ""))
    item.install_time = i("InstallTime", "")
    item.management_unit = i("ManagementUnit", "")
    item.contact_info = i("ContactInfo", "")
    item.hfov = _float(item, "HorizontalFieldAngle", i("HorizontalFieldAngle", ""))
    item.vfov = _float(item, "VerticalFieldAngle", i("VerticalFieldAngle", ""))
    item.max_view_distance = _float(item, "MaxViewDistance", i("MaxViewDistance", ""))
    item.mac = i("MAC", "")
    item.grassroots_code = i("GrassrootsCode", "")
    return item


def parse_manscdp(
    body: bytes, declared: str | None = None, *, max_bytes: int = MAX_MANSCDP_BYTES
) -> Manscdp:
    """Parse a MANSCDP body; raise `ManscdpError` with a short reason if unusable."""
    if len(body) > max_bytes:
        raise ManscdpError(f"body too large: {len(body)} bytes > {max_bytes}")
    decoded = decode_body(body, declared)
    # Re-encode as UTF-8 without the declaration, so the parser cannot be told otherwise.
    raw = _XML_DECL.sub(b"", decoded.text.encode("utf-8"), count=1)
    try:
        root = parse_xml(raw, max_bytes=max_bytes * 2)
    except MalformedXml as exc:
        raise ManscdpError(str(exc)) from None
    if not isinstance(root.tag, str):
        raise ManscdpError("no root element")
    tag = root.tag
    if tag not in ("Query", "Response", "Notify", "Control"):
        raise ManscdpError(f"root element is not Query/Response/Notify/Control: {tag[:40]}")
    # One pass over the children: the first element of each name (what `find` returns) and
    # the first leaf of each name as a field (three `find`s per body cost as much as this).
    first: dict[str, Any] = {}
    fields: dict[str, str] = {}
    for child in root:
        name = child.tag
        if not isinstance(name, str):
            continue
        if name not in first:
            first[name] = child
        if len(child) == 0 and name not in fields:
            fields[name] = (child.text or "").strip()

    def text(name: str) -> str:
        child = first.get(name)
        return "" if child is None or child.text is None else str(child.text).strip()

    cmd_type = text("CmdType")
    sn_text = text("SN")
    device_id = text("DeviceID")
    if not cmd_type:
        raise ManscdpError("no CmdType")
    if not sn_text.isdigit() or len(sn_text) > 10:
        raise ManscdpError("SN is not a number")
    if not device_id:
        raise ManscdpError("no DeviceID")
    items: list[CatalogItem] = []
    sum_num: int | None = None
    if cmd_type == "Catalog":
        sum_text = text("SumNum")
        if sum_text:
            if not sum_text.isdigit() or len(sum_text) > 9:
                raise ManscdpError("SumNum is not a number")
            sum_num = int(sum_text)
        device_list = first.get("DeviceList")
        if device_list is not None:
            items = [_item(el) for el in device_list.findall("Item")]
    return Manscdp(tag, cmd_type, int(sn_text), device_id, fields, items, sum_num, decoded)


def encode_body(xml_text: str, charset: str = "GB2312") -> bytes:
    """Encode with the declaration matching the bytes (we never mislabel)."""
    enc = "gb18030" if _norm_charset(charset) == "gb18030" else "utf-8"
    decl = f'<?xml version="1.0" encoding="{charset}"?>\r\n'
    return (decl + xml_text).encode(enc)


def build(
    root: str, cmd_type: str, sn: int, device_id: str, extra: str = "", *, charset: str = "GB2312"
) -> bytes:
    """A MANSCDP body; `extra` is already-escaped inner XML (e.g. `<Status>OK</Status>`)."""
    xml = (
        f"<{root}>\r\n<CmdType>{escape(cmd_type)}</CmdType>\r\n<SN>{sn}</SN>\r\n"
        f"<DeviceID>{escape(device_id)}</DeviceID>\r\n{extra}</{root}>\r\n"
    )
    return encode_body(xml, charset)


def build_query(cmd_type: str, sn: int, device_id: str, *, charset: str = "GB2312") -> bytes:
    return build("Query", cmd_type, sn, device_id, charset=charset)


def build_keepalive(sn: int, device_id: str, *, charset: str = "GB2312") -> bytes:
    return build("Notify", "Keepalive", sn, device_id, "<Status>OK</Status>\r\n", charset=charset)


def element(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>\r\n"
