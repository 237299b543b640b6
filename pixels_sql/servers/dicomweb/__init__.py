"""DICOMweb (PS3.18) over the catalog: QIDO-RS, WADO-RS and STOW-RS, served by pixels-sql serve."""
