"""Content fingerprints of model sources: the same bytes anywhere give the same fingerprint."""

from __future__ import annotations

import shutil
from pathlib import Path

from thaw.objectives import ModelSource, file_fingerprint, model_fingerprint


def test_a_folder_copied_elsewhere_has_the_same_fingerprint_and_a_changed_byte_another(
    tmp_path: Path,
) -> None:
    preset = tmp_path / "a" / "preset"
    (preset / "assets").mkdir(parents=True)
    (preset / "config.json").write_text('{"x": 1}')
    (preset / "assets" / "vocab.txt").write_text("a\nb\n")
    copy = tmp_path / "b" / "deeper" / "preset"
    shutil.copytree(preset, copy)
    assert file_fingerprint(preset) == file_fingerprint(copy)
    (copy / "assets" / "vocab.txt").write_text("a\nc\n")
    assert file_fingerprint(preset) != file_fingerprint(copy)
    (copy / "assets" / "vocab.txt").write_text("a\nb\n")
    (copy / "assets" / "vocab2.txt").write_text("")  # an extra empty file counts too
    assert file_fingerprint(preset) != file_fingerprint(copy)


def test_a_model_file_is_its_bytes_not_its_path(tmp_path: Path) -> None:
    one, two = tmp_path / "one" / "m.keras", tmp_path / "two" / "n.keras"
    for p in (one, two):
        p.parent.mkdir()
        p.write_bytes(b"model bytes")
    assert model_fingerprint(ModelSource("file", path=one)) == model_fingerprint(
        ModelSource("file", path=two)
    )
    two.write_bytes(b"other bytes")
    assert model_fingerprint(ModelSource("file", path=one)) != model_fingerprint(
        ModelSource("file", path=two)
    )


def test_an_application_is_its_name_and_weights(tmp_path: Path) -> None:
    imagenet = model_fingerprint(ModelSource("application", name="MobileNetV2"))
    assert imagenet == model_fingerprint(ModelSource("application", name="MobileNetV2"))
    assert imagenet != model_fingerprint(ModelSource("application", name="ResNet50"))
    assert imagenet != model_fingerprint(
        ModelSource("application", name="MobileNetV2", weights=None)
    )
    local = [tmp_path / "x" / "w.h5", tmp_path / "y" / "v.h5"]
    for p in local:
        p.parent.mkdir()
        p.write_bytes(b"weights")
    a, b = (
        model_fingerprint(ModelSource("application", name="MobileNetV2", weights=str(p)))
        for p in local
    )
    assert a == b != imagenet
