"""Learned ensembles live in the user's folder (scene_bridge.user_data), never in the install tree."""

from __future__ import annotations

import os

import pytest

from MuscleSAMLib.errors import OutputWriteError
from MuscleSAMLib.models.manifest import load_manifest, replace_spec
from MuscleSAMLib.models.manifest_writer import add_entry
from MuscleSAMLib.scene_bridge.user_data import learning_output, user_manifest
from musclesam_test_helpers import write_random_decoder_ensemble


@pytest.fixture
def install(tmp_path):
    """A read-only 'install tree' holding the shipped manifest and its weights."""
    shipped = write_random_decoder_ensemble(tmp_path / "install" / "weights", members=2, seed=3)
    yield shipped
    for root, dirs, files in os.walk(tmp_path / "install"):
        os.chmod(root, 0o755)


def test_user_manifest_points_at_the_installed_weights_and_keeps_learned_entries(tmp_path, install):
    before = sorted(p.name for p in install.parent.iterdir())
    os.chmod(install.parent, 0o555)  # installs may be read-only
    user = tmp_path / "settings" / "MuscleSAM"
    manifest = user_manifest(user, install)
    assert manifest == user / "manifest.json"
    shipped = load_manifest(install).ensembles[0]
    copy = load_manifest(manifest).get(shipped.name)
    assert not copy.missing_files() and all(os.path.isabs(f.file) for f in copy.files)
    assert [f.sha256 for f in copy.files] == [f.sha256 for f in shipped.files]
    learned = replace_spec(copy, name="learned-1", default=False)
    add_entry(manifest, learned)  # what learning from corrections does with --manifest
    again = load_manifest(user_manifest(user, install))  # the next start refreshes the shipped part
    assert again.names == [shipped.name, "learned-1"] and again.get(None).name == shipped.name
    assert sorted(p.name for p in install.parent.iterdir()) == before  # nothing written into the install tree
    assert learning_output(user, "20261201-1200") == user / "learning" / "20261201-1200"


def test_a_folder_that_cannot_be_written_is_one_clear_error(tmp_path, install):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(OutputWriteError, match="choose another folder"):
        user_manifest(blocked / "MuscleSAM", install)


def test_every_shipped_entry_is_installed_through_the_user_manifest(tmp_path):
    """The shipped entries' shared trunks and the joined entry's partner are found from the user's folder."""
    from MuscleSAMLib.models.loading import missing_files
    from MuscleSAMLib.paths import DEFAULT_MANIFEST

    manifest = load_manifest(user_manifest(tmp_path / "MuscleSAM"))
    shipped = load_manifest(DEFAULT_MANIFEST)
    assert set(shipped.names) <= set(manifest.names)
    for name in shipped.names:
        spec = manifest.get(name)
        assert missing_files(manifest, spec) == [], name
        if spec.shared is not None:
            assert os.path.isabs(spec.shared.file) and spec.shared.sha256 == shipped.get(name).shared.sha256
