"""The one manifest writer (models/manifest_writer.add_entry): entries added at once are all kept, names never clash."""

from __future__ import annotations

import threading

import pytest

from musclesam_test_helpers import write_random_decoder_ensemble
from MuscleSAMLib.errors import WeightsError
from MuscleSAMLib.models.manifest import load_manifest, replace_spec
from MuscleSAMLib.models.manifest_writer import add_entry


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    manifest = write_random_decoder_ensemble(tmp_path_factory.mktemp("w"), members=1)
    return load_manifest(manifest).get()


def test_concurrent_writers_keep_every_entry(base, tmp_path):
    manifest = tmp_path / "manifest.json"
    add_entry(manifest, base)  # created when absent
    threads = [threading.Thread(target=add_entry, args=(manifest, replace_spec(base, name=f"run{n}", default=False)))
               for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    man = load_manifest(manifest)
    assert sorted(man.names) == sorted([base.name] + [f"run{n}" for n in range(8)])
    assert man.get().name == base.name  # default untouched


def test_a_name_that_exists_is_refused_unless_replacing(base, tmp_path):
    manifest = tmp_path / "manifest.json"
    add_entry(manifest, base)
    add_entry(manifest, replace_spec(base, name="other", default=False))
    with pytest.raises(WeightsError, match=f"manifest .*manifest.json already has an ensemble 'other'"):
        add_entry(manifest, replace_spec(base, name="other", default=False))
    add_entry(manifest, replace_spec(base, name="other", default=True, version="2"), replace=True)  # retrained
    man = load_manifest(manifest)
    assert sorted(man.names) == sorted([base.name, "other"])
    assert man.get().name == "other" and man.get().version == "2"  # the default moved, one default only
    assert [e.default for e in man.ensembles].count(True) == 1


def test_publishing_the_same_weights_again_leaves_the_file_bytes_alone(tmp_path):
    """A re-published ensemble whose tensors did not change keeps its committed file (no new git blob)."""
    import torch

    from MuscleSAMLib.models.safe_load import save_safetensors_atomic, sha256_file

    path = tmp_path / "w.safetensors"
    state = {"a": torch.arange(6, dtype=torch.float16).reshape(2, 3), "b": torch.ones(4)}
    meta = {"arch": "litemedsam", "base_sha256": "x", "temperature": "5.5"}
    first = save_safetensors_atomic(state, path, meta)
    before = path.stat().st_mtime_ns
    assert save_safetensors_atomic(dict(state), path, dict(reversed(list(meta.items()))), keep_identical=True) == first
    assert path.stat().st_mtime_ns == before
    changed = save_safetensors_atomic(state, path, {**meta, "temperature": "6.0"}, keep_identical=True)
    assert changed != first and sha256_file(path) == changed  # new metadata: written anew
    again = save_safetensors_atomic({**state, "b": torch.zeros(4)}, path, {**meta, "temperature": "6.0"}, keep_identical=True)
    assert again != changed
