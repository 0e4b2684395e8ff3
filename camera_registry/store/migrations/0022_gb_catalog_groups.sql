-- The business groups (215) and virtual organisations (216) a catalog push hands upward are
-- read from devices' catalogs at the start of every push: a small index instead of a scan of
-- every channel of every device (millions of rows in a province).
CREATE INDEX gb_catalog_items_groups ON gb_catalog_items (item_id, updated_at DESC)
    WHERE type_code IN ('215', '216') AND NOT removed;
