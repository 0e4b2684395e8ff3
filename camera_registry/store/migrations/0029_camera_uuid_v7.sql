-- Time-ordered camera ids (issue 13: the write floor of an import).
--
-- Random v4 UUIDs scatter every insert over the whole primary key of `cameras` (and of
-- `camera_health`, keyed by the same id): at 600,000 rows a new camera's key lands on a page
-- no recent insert touched, so the index's working set is all of it. A UUIDv7 (RFC 9562: 48
-- bits of Unix milliseconds, version 7, 74 random bits) puts each new key at the right edge
-- of the index. Measured (bench/bench_write_floor.py, 600,000 typed cameras COPYed into an
-- empty `cameras` with its indexes and triggers): 36.5 s of PostgreSQL CPU with v4 ids,
-- 21.2 s with time-ordered ones. Ids stay opaque UUIDs; existing ones are not changed.
-- PostgreSQL 15 has no uuidv7(): this SQL function builds one from gen_random_uuid()'s random
-- bytes (~2 µs a row, far less than what it saves).

CREATE FUNCTION camera_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp())
                                                     * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),  -- version nibble 0100 (v4) -> 0111 (v7); the variant stays 10
        'hex')::uuid
$$;

ALTER TABLE cameras ALTER COLUMN id SET DEFAULT camera_uuid_v7();
