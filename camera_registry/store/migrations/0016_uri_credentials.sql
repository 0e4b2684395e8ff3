-- Stream URIs stored before the stream-URI parser could hold a password that a strict URI
-- parser misread (`rtsp://admin:pa?ss@host/x`): every reader saw it. Sealing needs the
-- credential key, which SQL does not have, so this migration only finds them, once; the
-- startup pass (store/cameras.py move_uri_credentials) seals each and removes its row here.
CREATE TABLE uri_credential_moves (
    camera_id uuid PRIMARY KEY REFERENCES cameras (id) ON DELETE CASCADE
);
INSERT INTO uri_credential_moves (camera_id)
SELECT id FROM cameras WHERE streams::text LIKE '%@%';
