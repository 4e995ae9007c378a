"""Property-based checks (hypothesis) of reading: oblique geometry survives a NIfTI round trip;
DICOM affines have orthogonal columns of the pixel spacing; label maps parse to a map or one
clear line and round-trip; frame indices are checked."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import PROPS, origins, orthogonal_affines

from cardioinr.core.errors import InputError
from cardioinr.geometry import spacing_from_affine, validate_affine, voxel_to_world
from cardioinr.io.dicom import dicom_affine
from cardioinr.io.load import load_sequence
from cardioinr.io.nifti import save_nifti
from cardioinr.io.sequence import LabelMap, check_frame_index

@settings(max_examples=40, deadline=None, database=None)
@given(orthogonal_affines())
def test_oblique_geometry_survives_a_nifti_round_trip(tmp_path_factory, aff) -> None:
    path = tmp_path_factory.mktemp("rt") / "c.nii.gz"
    img = np.random.default_rng(0).normal(100, 10, size=(6, 5, 2, 3)).astype(np.float32)
    save_nifti(path, img, aff, frame_interval_ms=30.0)
    seq = load_sequence(path)
    np.testing.assert_allclose(seq.affine, aff, rtol=0, atol=1e-4 * (1 + np.abs(aff).max()))
    np.testing.assert_allclose(seq.spacing, spacing_from_affine(aff), rtol=1e-5)
    np.testing.assert_array_equal(seq.image, img)


@PROPS
@given(st.tuples(*[st.floats(-1, 1) for _ in range(3)]).filter(lambda v: np.linalg.norm(v) > 0.1),
       st.tuples(*[st.floats(-1, 1) for _ in range(3)]).filter(lambda v: np.linalg.norm(v) > 0.1),
       origins, st.tuples(st.floats(0.3, 4.0), st.floats(0.3, 4.0)), st.floats(-12.0, 12.0).filter(lambda s: abs(s) > 0.1))
def test_dicom_affine_has_orthogonal_columns_of_the_pixel_spacing(r, c, ipp, ps, step) -> None:
    row = np.array(r) / np.linalg.norm(r)
    col = np.array(c) - (np.array(c) @ row) * row  # make the column direction orthogonal
    if np.linalg.norm(col) < 0.1:
        return
    col /= np.linalg.norm(col)
    aff = dicom_affine(np.concatenate([row, col]), np.array(ipp), np.array(ps), step)
    validate_affine(aff, "dicom")
    np.testing.assert_allclose(spacing_from_affine(aff), [ps[1], ps[0], abs(step)], rtol=1e-9)
    np.testing.assert_allclose(voxel_to_world(aff, np.zeros(3)), np.array(ipp) * [-1, -1, 1], atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


@PROPS
@given(st.text(max_size=40))
def test_label_map_parse_gives_a_map_or_one_clear_line(text) -> None:
    try:
        lm = LabelMap.parse(text)
    except InputError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(lm, LabelMap) and lm.codes()


@PROPS
@given(st.lists(st.integers(1, 255), min_size=3, max_size=3, unique=True), st.permutations(["lv", "myo", "rv"]))
def test_label_map_round_trip(codes, order) -> None:
    given_codes = dict(zip(order, codes))
    lm = LabelMap.parse(",".join(f"{k}={v}" for k, v in given_codes.items()))
    assert lm.as_dict() == given_codes
    assert LabelMap.coerce(lm.as_dict()) == lm


@PROPS
@given(st.integers(1, 50), st.integers(-200, 200))
def test_frame_index(n, t) -> None:
    if -n <= t < n:
        assert check_frame_index(t, n) == t % n
    else:
        with pytest.raises(InputError, match="out of range"):
            check_frame_index(t, n)
