-- A big catalog (a city's cascade: up to millions of items) is written in batches as its
-- MESSAGEs arrive instead of being held whole in memory; each batch marks its items with the
-- query's generation, and the end of a complete catalog marks removed the device's items not
-- marked by that query. NULL: written by a catalog that fit one batch, or by a NOTIFY.
ALTER TABLE gb_catalog_items ADD COLUMN catalog_gen bigint;
