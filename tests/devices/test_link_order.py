"""The link's order: an older answer never undoes a newer one, across restarts too."""

from __future__ import annotations

import pytest

pytest.importorskip("tango")

from icat_servers.adapters.tango.link import Leader, Stamp, encode
from icat_servers.icatcore.records import Experiment


def leader() -> Leader:
    return Leader("id00/metadata/test", "id00/metaexp/test", lambda _: None, lambda *_: None)


def test_an_older_revision_of_the_same_run_is_ignored() -> None:
    link = leader()
    new, old = Experiment("hg2"), Experiment("hg1")
    assert link.take(encode(new, Stamp("0001-a", 2))) == new
    assert link.take(encode(old, Stamp("0001-a", 1))) is None
    assert link.take(encode(new, Stamp("0001-a", 2))) == new, "the same answer again is fine"


def test_a_late_answer_of_a_meta_experiment_that_restarted_since_is_ignored() -> None:
    link = leader()
    restarted, before = Experiment("hg2"), Experiment("hg1")
    assert link.take(encode(restarted, Stamp("0002-b", 0))) == restarted
    assert link.take(encode(before, Stamp("0001-a", 7))) is None
    assert link.heard == 1
