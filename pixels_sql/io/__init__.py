"""Where bytes come from and how files are read safely, below the DICOM layer.

``paths`` (path and URI spellings), ``sources`` (the one way any path is opened: a local file,
a zip member read in place by ``archives``, an object in object storage by ``storage``) and
``isolation`` (the helper process a batch of files is read in). No Spark import and no DICOM
parsing here: the header readers and renderers of ``pixels_sql.dicom`` take what these open.
"""
