"""Model presets: names, class lists."""

from __future__ import annotations

import re

import pytest

from ingest.models.presets import PRESETS, UnknownModelError, get_spec, imagenet_class_names


def test_imagenet_classes_are_the_standard_order_with_wordnet_ids():
    names = imagenet_class_names()
    assert len(names) == len(set(names)) == 1000
    wnids = [re.search(r"\((n\d{8})\)$", n).group(1) for n in names]
    assert wnids == sorted(wnids)  # index = rank of the sorted synset id
    assert names[0] == "tench (n01440764)" and names[999] == "toilet tissue (n15075141)"
    assert names[134] != names[517] and names[134].startswith("crane") and names[517].startswith("crane")
    assert PRESETS["imagenet"].class_names == names


def test_unknown_model_lists_the_presets():
    with pytest.raises(UnknownModelError) as err:
        get_spec("sdxl-2step")
    for name in PRESETS:
        assert name in str(err.value)
