-- What each camera's last import row was, so a re-import skips the rows that did not change
-- (issue 13: an unchanged re-import cost as much validation and merging as the first import).
--
-- One row per ledger line that an import merged: the digest of the line's raw bytes together
-- with everything else that decides what the line means (the file's encoding, delimiter and
-- header, the import's 坐标系 and scope), the camera it became and the camera's version right
-- after that import. A later import skips a line whose digest is here *and* whose camera still
-- has that version: any other writer (the API, discovery) bumps the version, so a camera edited
-- since is validated and merged as before. Written only by the import (store/bulk.py).
--
-- UNLOGGED: after a crash the table is empty, and the next import of each file is merely as
-- slow as a first one; no row of it is needed for correctness. Rows of older versions of a
-- camera's line stay until their digest is reused (they can never match again: the version moved).

CREATE UNLOGGED TABLE camera_import_rows (
    row_digest bytea PRIMARY KEY,
    camera_id uuid NOT NULL,
    camera_version integer NOT NULL
);
