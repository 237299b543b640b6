-- pixels-sql pipeline, step 0: the database every table and view of the pipeline lives in.
-- Parameters: database (default: pixels).
CREATE DATABASE IF NOT EXISTS ${database:-pixels};

USE ${database:-pixels};
