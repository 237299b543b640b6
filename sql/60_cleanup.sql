-- Step 6: the run's working relations, once no step needs them: the reads 20_meta.sql kept for
-- the typed header table (pixels_read, a view of the listing: the listing outlives it), then
-- this run's listing table (10_catalog.sql), named by a variable (sqlglot's grammar has no
-- DROP TABLE IDENTIFIER(): the statement is built), and its view.
UNCACHE TABLE IF EXISTS pixels_read;

DROP VIEW IF EXISTS pixels_read;

EXECUTE IMMEDIATE concat('DROP TABLE IF EXISTS ', pixels_listing_table);

DROP VIEW IF EXISTS pixels_listing;
