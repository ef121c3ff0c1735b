"""Synthetic inputs for tests, benchmarks and the demo (``cxr-dask synth``, ``make run``).

- ``synth``: a deterministic corpus of chest x-ray DICOM files with PHI planted wherever
  real archives have it (headers, folder and file names, pixels), and the broken files
  a real archive holds (``bad_corpus``);
- ``synth_text``: text, markers and decoys (wires, leads, rib edges) painted into pixels.

Files are written through ``cxr_dask.storage`` (atomic, any fsspec URL), as the pipeline
writes its own.
"""
