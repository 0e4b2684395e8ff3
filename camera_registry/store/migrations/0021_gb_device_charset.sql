-- The charset each GB/T 28181 device's bodies really are in (`charset`, "utf-8" or "gb18030"),
-- beside what they declared: devices lie about it, and what we send a device is written in
-- the charset it really uses. `charset_sniffed` is true when non-ASCII bytes decided it (an
-- ASCII-only device has only its declaration to go by).
ALTER TABLE gb_devices
    ADD COLUMN charset_declared text,
    ADD COLUMN charset_sniffed  boolean;
