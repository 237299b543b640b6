"""DICOM networking (DIMSE, PS3.7) in ``pixels-sql serve --dicom-port``: C-ECHO, C-STORE into
the home through the intake, C-FIND over the DICOMweb index with QIDO-RS's matcher, C-MOVE and
C-GET from the catalog; and ``pixels-sql store``, the sending side. Built on pynetdicom.
docs/dimse.md is the conformance statement."""
