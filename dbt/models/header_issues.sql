-- Values that left their typed column (a malformed date, a DS that is no number, another VR
-- than the dictionary's), one row each, live files only: the pipeline's header_issues
-- (sql/50_header.sql, by way of macros/pipeline.sql). A view.
{{ pipeline_header_issues(pixels_params(), header=ref('header')) }}
