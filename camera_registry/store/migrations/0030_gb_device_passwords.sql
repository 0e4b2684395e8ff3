-- Per-device SIP passwords in a table of their own (issue 14: the registration wave).
--
-- Every REGISTER asks for its device's own password. Looked up in `gb_devices`, the lookup's
-- cached generic plan, made while the table was nearly empty at the start of a registration
-- wave, stayed a sequential scan of all of it: 10.6 ms a call and 21 s of PostgreSQL CPU in a
-- wave of 50,000 devices (pg_stat_statements, bench/bench_gb28181.py). Most devices use the
-- configured default password; this table holds only those that have their own, so the
-- lookup reads a few rows (through its primary key once there are many), whatever plan it has.
CREATE TABLE gb_device_passwords (
    device_id   text COLLATE "C" PRIMARY KEY CHECK (char_length(device_id) = 20),
    password    bytea NOT NULL,             -- sealed (AES-GCM), like camera credentials
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO gb_device_passwords (device_id, password)
SELECT device_id, password FROM gb_devices WHERE password IS NOT NULL;

ALTER TABLE gb_devices DROP COLUMN password;
