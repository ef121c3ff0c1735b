"""What is flagged for a human look: uncertain regions only, never the edges nobody reads.

On real chest films most candidate lines are rib, clavicle and lung edges, wires and
noise, which Tesseract, its inverted read and the text detector all find no text in:
listing them put 88% of a real run on the review list. Those are ``left`` (counted in
the audit, not listed); a read near a threshold, a box the recogniser was unsure of, or
letters of ink nothing read are ``flagged``.
"""

from __future__ import annotations

import numpy as np
import pytest

from cxr_dask import metadata, review
from cxr_dask.deid import pixels
from cxr_dask.deid.pixels import cleaning, detection, textrec
from cxr_dask.deid.pixels.policy import decide
from cxr_dask.deid.pixels.types import Region, Word
from cxr_dask.deid.rules import PixelOptions
from cxr_dask.testing.synth_text import DECOYS, available_fonts, draw_mask, film
from tests.test_pixels_policy import HIGH, as_dataset


@pytest.mark.parametrize("name", ["rib_edges", "ecg_lead"])
def test_a_film_whose_candidates_are_only_unreadable_edges_is_not_flagged(name):
    result = pixels.clean(as_dataset(DECOYS[name](film(0))), PixelOptions())
    assert result.array is None
    assert result.report.count("left") >= 1  # the screen found candidates, nothing read text
    assert result.report.count("flagged") == 0, [(r.why, r.box) for r in result.report.regions]
    assert not review.needs_review(result) and review.render(result, "MONOCHROME2") is None
    assert metadata.pixel_class_counts(result.report)["pixel_regions_left"] == result.report.count("left")


LINE = Region(100, 100, 400, 140, bright=True, glyphs=6, line_height=30)


def _word(confidence: float, characters: int = 4, symbols: int = 0) -> Word:
    return Word(110, 105, 200, 135, allowed=False, confidence=confidence, characters=characters, symbols=symbols)


def test_a_read_near_the_confidence_threshold_is_flagged_and_junk_is_left():
    shape = (1024, 1024)
    near = decide(LINE, [_word(57.0)], PixelOptions(), shape)
    assert (near.kind, near.why, near.blank) == ("flagged", "low-confidence read", ())
    for junk in ([], [_word(30.0)], [_word(58.0, characters=2)], [_word(58.0, characters=3, symbols=2)]):
        assert decide(LINE, junk, PixelOptions(), shape).kind == "left", junk
    assert decide(LINE, [_word(75.0)], PixelOptions(), shape).kind == "text"  # evidence, as before


def test_a_box_the_recogniser_is_unsure_of_is_flagged_and_one_it_reads_as_nothing_is_left():
    assert textrec.Reading(latin=4, other=0, score=0.7).is_unsure
    assert not textrec.Reading(latin=4, other=0, score=0.3).is_unsure  # junk on anatomy
    assert not textrec.Reading(latin=4, other=0, score=0.95).is_unsure  # text: blanked
    assert not textrec.Reading(latin=1, other=0, score=0.7).is_unsure  # a lone letter
    assert cleaning._not_confirmed([True, False]).kind == "flagged"
    assert cleaning._not_confirmed([True, True]).kind == "left"


def test_letters_of_ink_nothing_reads_are_flagged_and_stacked_rib_ends_are_not():
    from PIL import ImageFont

    font = ImageFont.truetype(available_fonts()[0], 90)
    letters = draw_mask(film(2), lambda d: d.text((300, 700), "AP", fill=255, font=font), HIGH)
    ribs = DECOYS["rib_edges"](film(0))
    found = {}
    for name, arr in (("letters", letters), ("ribs", ribs)):
        span = detection.stroke_span(arr)
        found[name] = [cleaning.ink_in_a_row(cleaning.inked_glyphs(arr, r, span)) for r in detection.detect(arr)]
    assert any(found["letters"])
    assert found["ribs"] and not any(found["ribs"])
    arr = ribs.astype(np.float32)
    assert cleaning.inked_glyphs(arr, Region(0, 0, 0, 0, True, 0, 10), 100.0) == []  # an empty box
