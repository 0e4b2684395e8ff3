-- GB/T 28181 device access, missing features (issue 14): per-device charset, media diagnosis.
-- The charset each GB/T 28181 device's bodies really are in (`charset`, "utf-8" or "gb18030"),
-- beside what they declared: devices lie about it, and what we send a device is written in
-- the charset it really uses. `charset_sniffed` is true when non-ASCII bytes decided it (an
-- ASCII-only device has only its declaration to go by).
ALTER TABLE gb_devices
    ADD COLUMN charset_declared text,
    ADD COLUMN charset_sniffed  boolean;

-- Frame diagnosis of channels off the RTSP schedule (GB/T 28181: `next_probe_at = infinity`)
-- takes the least recently diagnosed first: walk them in that order, not sort them all.
CREATE INDEX camera_health_media_due ON camera_health (last_diagnosis_at NULLS FIRST)
    WHERE next_probe_at = 'infinity';
