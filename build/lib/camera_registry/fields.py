"""The camera's fields as ledgers, exports and the API name them.

One table, so that an export re-imports unchanged and the Chinese column names a province's
Excel ledger uses map to the same field everywhere (import, export, API errors, web map).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["text", "float", "int", "date"]


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    label_zh: str
    kind: Kind
    aliases: tuple[str, ...] = ()


# Order is the export column order.
FIELDS: tuple[Field, ...] = (
    Field("gb_id", "国标编码", "text",
          ("设备编码", "国标ID", "国标编号", "设备国标编码", "gbid", "device_id")),
    Field("name", "点位名称", "text", ("名称", "设备名称", "摄像机名称", "camera_name")),
    Field("level", "点位类型", "text", ("点位级别", "级别", "类型", "point_type", "pointtype")),
    Field("lon", "经度", "float", ("longitude", "lng", "x")),
    Field("lat", "纬度", "float", ("latitude", "y")),
    Field("crs", "坐标系", "text", ("坐标类型", "coordinate_system")),
    Field("region_code", "行政区划", "text",
          ("行政区划代码", "区划代码", "行政区域", "civil_code", "civilcode")),
    Field("address", "安装地址", "text", ("地址", "安装位置", "点位地址")),
    Field("azimuth", "方向角", "float", ("方位角", "朝向", "bearing", "direction")),
    Field("hfov", "水平视场角", "float", ("水平视角", "horizontal_fov")),
    Field("vfov", "垂直视场角", "float", ("垂直视角", "vertical_fov")),
    Field("max_view_distance", "最大可视距离", "float", ("可视距离", "viewdistance")),
    Field("mount_height", "安装高度", "float", ("高度", "height")),
    Field("owner", "建设单位", "text", ("管理单位", "权属单位", "owner_unit")),
    Field("contact", "联系人", "text", ("联系方式", "负责人")),
    Field("installed_at", "安装时间", "date", ("建设时间", "install_time", "installtime")),
    Field("record_days", "录像保存天数", "int", ("存储天数", "录像天数", "recorddays")),
    Field("vendor", "厂商", "text", ("设备厂商", "品牌", "manufacturer")),
    Field("model", "型号", "text", ("设备型号",)),
    Field("firmware", "固件版本", "text", ("firmware_version",)),
    Field("serial", "序列号", "text", ("设备序列号", "serial_number")),
    Field("mac", "MAC地址", "text", ("mac_address", "物理地址")),
    Field("ip", "IP地址", "text", ("ip_address", "设备IP")),
    Field("onvif_port", "端口", "int", ("onvif端口", "port")),
    Field("stream_main", "主码流地址", "text", ("主码流", "rtsp", "rtsp_main", "main_stream")),
    Field("stream_sub", "子码流地址", "text", ("子码流", "rtsp_sub", "sub_stream")),
    Field("snapshot", "抓图地址", "text", ("snapshot_uri", "snapshot_url")),
    Field("username", "用户名", "text", ("user", "登录名")),
    Field("password", "密码", "text", ("登录密码",)),
)  # fmt: skip

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

# Fields never exported or returned by read endpoints.
SECRET_FIELDS = frozenset({"username", "password"})


def _norm(header: str) -> str:
    return "".join(header.split()).replace("_", "").replace("-", "").lower()


HEADER_ALIASES: dict[str, str] = {}
for _f in FIELDS:
    for _a in (_f.name, _f.label_zh, *_f.aliases):
        HEADER_ALIASES[_norm(_a)] = _f.name


def canonical_header(header: str) -> str | None:
    """The field a ledger column header names (Chinese or English, any case/spacing), or None."""
    return HEADER_ALIASES.get(_norm(header.lstrip("\ufeff")))


# The one list of the `cameras` columns written from input, in COPY order: every field but the
# input-only ones (a CRS is converted away, username/password are sealed into `credentials`).
INPUT_ONLY = frozenset({"crs", "username", "password"})
DB_COLUMNS: tuple[str, ...] = (
    *(f.name for f in FIELDS if f.name not in INPUT_ONLY),
    "credentials",
    "credentials_mac",
)
# Input columns stored under `cameras.streams` (a JSON object) rather than in columns of their own.
STREAM_KEYS: dict[str, str] = {"stream_main": "main", "stream_sub": "sub", "snapshot": "snapshot"}
# Plain columns, as read back (no streams, no credentials).
STORED_COLUMNS: tuple[str, ...] = tuple(
    c for c in DB_COLUMNS if c not in STREAM_KEYS and not c.startswith("credentials")
)
