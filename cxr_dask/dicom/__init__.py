"""DICOM facts and the output layout, each stated once: pure functions and constants.

Every stage (inventory, the header walk, the pixel cleaner, metadata, verify) reads its
dates, codes and paths from here, so the writer and the checker cannot drift apart.

- ``dates``: date values, their renderings in free text, the shifted-years window;
- ``codes``: the PS3.16 CID 7050 de-identification method codes this tool writes;
- ``layout``: the MIMIC-CXR output paths, built and parsed;
- ``vrs``, ``syntaxes``: VRs and transfer syntaxes by what is done with them;
- ``values``: an element's values as text, a tag's safe name;
- ``_pydicom``: pydicom's private names the package relies on, each with why.
"""
