"""Bundles of every kind the loader must run, built from the digits CNN by the real pipeline."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def loader_bundles(tmp_path_factory, digits_files):
    """{"int8-io": TFLite int8 with int8 input and output, "fp16": TFLite fp16, "onnx": ONNX int8 (QDQ)}."""
    from edgepack.builder.pipeline import build
    from edgepack.profile.store import Catalog, SearchDir, builtin_dir

    model, data = digits_files
    root = tmp_path_factory.mktemp("loader-bundles")
    targets = root / "targets"
    targets.mkdir()
    profiles = {
        "int8-io": "extends: raspberry-pi-4\nbuild: {precision: int8, io_dtype: int8}\n",
        "fp16": "extends: raspberry-pi-4\nbuild: {precision: fp16}\n",
        "onnx": "extends: raspberry-pi-5-onnx\n",
    }
    catalog = Catalog([SearchDir("project", targets), SearchDir("builtin", builtin_dir())])
    bundles = {}
    for kind, text in profiles.items():
        (targets / f"t-{kind}.yaml").write_text(text)
        # Each in a directory of its own: the directory beside a bundle is its device workdir (load-cache/ lands there).
        bundles[kind] = build(model, f"t-{kind}", data=data, out=root / kind / "bundle", use_cache=False, catalog=catalog).bundle
    return bundles
