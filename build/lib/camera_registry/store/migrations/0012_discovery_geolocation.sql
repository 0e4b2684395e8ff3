-- The device's own GeoLocation (ONVIF GetGeoLocation, WGS-84), when it reported one (issue 3).
-- geo_flag says why a reported location is not taken for the camera's place: 'zero' (the
-- (0, 0) factory default) or 'outside_china'; NULL when plausible. Registration may then omit
-- lon/lat and use it.
ALTER TABLE discovered_devices
    ADD COLUMN geo_lon double precision CHECK (geo_lon BETWEEN -180 AND 180),
    ADD COLUMN geo_lat double precision CHECK (geo_lat BETWEEN -90 AND 90),
    ADD COLUMN geo_elevation double precision,  -- metres, as the device says
    ADD COLUMN geo_flag text CHECK (geo_flag IN ('zero', 'outside_china')),
    ADD CONSTRAINT discovered_devices_geo_pair CHECK (
        (geo_lon IS NULL) = (geo_lat IS NULL) AND (geo_flag IS NULL OR geo_lon IS NOT NULL));
