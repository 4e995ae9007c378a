"""Reading and writing cine sequences with their geometry.

Everything that enters the package goes through :class:`Sequence`: the image array, its
voxel-to-world affine (millimetres), the frame interval and the label maps travel together,
so no motion is ever computed in ambiguous voxel units.

Inputs understood by :func:`load_sequence`:

* a 4D NIfTI cine ``(X, Y, Z, T)`` (ACDC style; ``Z == 1`` for a single slice);
* an ``.npz`` written by :func:`save_npz`;
* a folder of per-frame NIfTI volumes (one 2D or 3D file per frame, ordered by the frame number
  in the file name);
* a folder holding one DICOM cine series (one file per slice position and trigger time, legacy
  multi-frame files, or an enhanced multi-frame file), see :func:`load_dicom_folder`.

Modules
-------
* :mod:`cardioinr.io.sequence`: :class:`Sequence`, :class:`LabelMap` (label codes), checks;
* :mod:`cardioinr.io.nifti`: NIfTI cines and label maps, writing NIfTI;
* :mod:`cardioinr.io.npz`, :mod:`cardioinr.io.frames` (per-frame folders),
  :mod:`cardioinr.io.dicom` (DICOM series and their geometry);
* :mod:`cardioinr.io.load`: :func:`load_sequence`, which picks one of the above;
* :mod:`cardioinr.io.study`, :mod:`cardioinr.io.studies`: :class:`Study` (a short-axis stack and
  long-axis cines) and its loaders (:func:`load_study_any`);
* :mod:`cardioinr.io.datasets`: dataset indexes (manifest, Sunnybrook, ACDC, plain folders).

This module only re-exports them, together with the geometry (:mod:`cardioinr.geometry`) and
file utilities (:mod:`cardioinr.core.files`) that were first defined here.

Coordinate conventions used throughout the package (owned by :mod:`cardioinr.geometry`)
---------------------------------------------------------------------------------------
* *array-aligned millimetres* ("mm space"): ``p = index * spacing`` per array axis (i, j, k).
  Displacements are expressed along the array axes in millimetres (the output contract).
  For any affine whose columns are orthogonal (every scanner geometry, oblique included) this
  is an isometry of world space, so distances, strains and Jacobians are physical.
* *world*: ``affine @ [i, j, k, 1]``, used only to read and write files. World coordinates are
  NIfTI's RAS+ millimetres (+x towards the patient's right, +y anterior, +z superior), as
  nibabel and dcm2niix write them.

DICOM geometry: see :mod:`cardioinr.io.dicom` (:func:`dicom_affine`).
"""

from __future__ import annotations

from cardioinr.core.errors import ConfigError, InputError
from cardioinr.core.files import (
    DEFAULT_MAX_GIB,
    atomic_path,
    check_memory,
    file_sha256,
    files_sha256,
    max_input_gib,
    write_json_atomic,
    write_text_atomic,
)
from cardioinr.geometry.grid import (
    Grid,
    make_affine,
    mm_to_voxel,
    spacing_from_affine,
    spatial_dim,
    validate_affine,
    voxel_grid_mm,
    voxel_to_mm,
    voxel_to_world,
    world_to_voxel,
)
from cardioinr.io.dicom import (
    DicomSeriesInfo,
    dicom_affine,
    list_dicom_series,
    load_dicom_folder,
    load_dicom_series,
)
from cardioinr.io.frames import load_nifti_frames
from cardioinr.io.load import load_folder, load_sequence
from cardioinr.io.nifti import (
    attach_labels,
    label_source,
    load_label_file,
    load_label_volume,
    load_nifti_sequence,
    read_nifti,
    save_nifti,
    save_sequence_nifti,
    strict_nifti_header,
)
from cardioinr.io.npz import load_npz, save_npz
from cardioinr.io.sequence import (
    ACDC,
    SUNNYBROOK,
    LabelMap,
    LabelSource,
    Sequence,
    attach_label_arrays,
    check_frame_index,
    validate_image,
)
from cardioinr.io.studies import (
    UKBB,
    lax_view_name,
    load_dicom_study,
    load_study,
    load_study_any,
    load_study_folder,
)
from cardioinr.io.study import LAX_VIEWS, Study, phase_to_sax_frame, plane_crosses_grid

__all__ = [
    "ACDC",
    "DEFAULT_MAX_GIB",
    "LAX_VIEWS",
    "SUNNYBROOK",
    "UKBB",
    "ConfigError",
    "DicomSeriesInfo",
    "Grid",
    "InputError",
    "LabelMap",
    "LabelSource",
    "Sequence",
    "Study",
    "atomic_path",
    "attach_label_arrays",
    "attach_labels",
    "check_frame_index",
    "check_memory",
    "dicom_affine",
    "file_sha256",
    "files_sha256",
    "label_source",
    "lax_view_name",
    "list_dicom_series",
    "load_dicom_folder",
    "load_dicom_series",
    "load_dicom_study",
    "load_folder",
    "load_label_file",
    "load_label_volume",
    "load_nifti_frames",
    "load_nifti_sequence",
    "load_npz",
    "load_sequence",
    "load_study",
    "load_study_any",
    "load_study_folder",
    "make_affine",
    "max_input_gib",
    "mm_to_voxel",
    "phase_to_sax_frame",
    "plane_crosses_grid",
    "read_nifti",
    "save_nifti",
    "save_npz",
    "save_sequence_nifti",
    "spacing_from_affine",
    "spatial_dim",
    "strict_nifti_header",
    "validate_affine",
    "validate_image",
    "voxel_grid_mm",
    "voxel_to_mm",
    "voxel_to_world",
    "world_to_voxel",
    "write_json_atomic",
    "write_text_atomic",
]
