"""cxr-dask: de-identify chest x-ray DICOM archives into a MIMIC-CXR-style dataset on Dask."""

__version__ = "0.1.0"
