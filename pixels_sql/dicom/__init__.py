"""Pure DICOM logic: no Spark import anywhere below this package."""
