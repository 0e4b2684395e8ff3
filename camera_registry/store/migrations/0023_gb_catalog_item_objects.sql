-- Catalog items were written as JSON strings holding the item's JSON (encoded once by hand
-- and again by the connection's jsonb codec): `item ->> 'field'` read NULL from them. Turn
-- every such string back into the object it holds; items are written as objects from now on.
UPDATE gb_catalog_items SET item = (item #>> '{}')::jsonb WHERE jsonb_typeof(item) = 'string';
