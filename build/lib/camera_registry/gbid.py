"""GB/T 28181 device IDs (20 digits, encoding rule A), validated field by field.

The ID is the key every VMS and platform above us uses for the camera, so a wrong digit is a
camera that never shows up upstream. We check every field we can and name the one at fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# GB/T 2260 province-level codes (digits 1-2), including 71 Taiwan, 81 Hong Kong, 82 Macao.
PROVINCES: dict[str, str] = {
    "11": "北京市", "12": "天津市", "13": "河北省", "14": "山西省", "15": "内蒙古自治区",
    "21": "辽宁省", "22": "吉林省", "23": "黑龙江省", "31": "上海市", "32": "江苏省",
    "33": "浙江省", "34": "安徽省", "35": "福建省", "36": "江西省", "37": "山东省",
    "41": "河南省", "42": "湖北省", "43": "湖南省", "44": "广东省", "45": "广西壮族自治区",
    "46": "海南省", "50": "重庆市", "51": "四川省", "52": "贵州省", "53": "云南省",
    "54": "西藏自治区", "61": "陕西省", "62": "甘肃省", "63": "青海省", "64": "宁夏回族自治区",
    "65": "新疆维吾尔自治区", "71": "台湾省", "81": "香港特别行政区", "82": "澳门特别行政区",
}  # fmt: skip

CAMERA_TYPES = frozenset({"131", "132"})
_DIGITS = re.compile(r"[0-9]{20}")
_REGION = re.compile(r"[0-9]{6}")


@dataclass(frozen=True, slots=True)
class GbId:
    value: str

    @property
    def region_code(self) -> str:
        return self.value[:6]

    @property
    def grassroots(self) -> str:
        return self.value[6:8]

    @property
    def industry(self) -> str:
        return self.value[8:10]

    @property
    def type_code(self) -> str:
        return self.value[10:13]

    @property
    def network(self) -> str:
        return self.value[13]

    @property
    def serial(self) -> str:
        return self.value[14:]


def gb_id_problem(value: str) -> str | None:
    """Why `value` is not a valid camera GB ID, or None when it is."""
    if not _DIGITS.fullmatch(value):
        return "must be exactly 20 digits (GB/T 28181 encoding rule A)"
    if value[:2] not in PROVINCES:
        return f"digits 1-2 ({value[:2]}) are not a GB/T 2260 province code"
    if value[2:4] == "00" and value[4:6] != "00":
        return "digits 3-4 (city) are 00 but digits 5-6 (district) are not"
    if value[10:13] not in CAMERA_TYPES:
        return (
            f"digits 11-13 ({value[10:13]}) are not a camera type; "
            "use 131 (camera) or 132 (IP camera)"
        )
    # digit 14 is 0-9 by construction; 9 is reserved by the standard.
    if value[13] == "9":
        return "digit 14 (network) is 9, which GB/T 28181 reserves; use 0-8"
    return None


def region_code_problem(value: str) -> str | None:
    """Why `value` is not a 6-digit GB/T 2260 region code, or None."""
    if not _REGION.fullmatch(value):
        return "must be a 6-digit GB/T 2260 administrative division code"
    if value[:2] not in PROVINCES:
        return f"digits 1-2 ({value[:2]}) are not a GB/T 2260 province code"
    return None


def parse_gb_id(value: str) -> GbId:
    problem = gb_id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return GbId(value)


def make_gb_id(
    region_code: str,
    serial: int,
    *,
    type_code: str = "132",
    industry: str = "00",
    network: str = "5",
    grassroots: str = "00",
) -> str:
    """Compose a camera ID; `serial` is the region's sequence number (0..999999)."""
    if not 0 <= serial <= 999_999:
        raise ValueError(f"serial {serial} does not fit GB/T 28181's 6 digits")
    value = f"{region_code}{grassroots}{industry}{type_code}{network}{serial:06d}"
    parse_gb_id(value)
    return value
