"""Fast checks of the web app's pure parts (no browser, no server process): drags, access rules, zips."""

from __future__ import annotations

import asyncio
import zipfile
from pathlib import Path

import numpy as np
import pytest

from MuscleSAMLib.errors import InputError
from MuscleSAMLib.web.drag_box import Drag, drag_to_ras, fraction_to_ras, ras_to_fraction
from MuscleSAMLib.web.security import access_middleware, check_bind, is_loopback


class FakeSliceNode:
    """Just what drag_box reads from a vtkMRMLSliceNode: Dimensions and XYToRAS."""

    def __init__(self, dims: tuple[int, int], xy_to_ras: np.ndarray) -> None:
        from vtkmodules.vtkCommonMath import vtkMatrix4x4

        self.dims, self.m = dims, vtkMatrix4x4()
        for r in range(4):
            for c in range(4):
                self.m.SetElement(r, c, float(xy_to_ras[r, c]))

    def GetDimensions(self) -> tuple[int, int, int]:  # noqa: N802 - VTK name
        return (*self.dims, 1)

    def GetXYToRAS(self):  # noqa: N802
        return self.m


def _node() -> FakeSliceNode:
    m = np.eye(4)
    m[0, 0], m[1, 1] = -0.5, 0.5  # 0.5 mm per pixel, patient right on screen left
    m[:3, 3] = (100.0, -80.0, 12.0)
    return FakeSliceNode((400, 300), m)


def test_drag_fractions_map_to_ras_and_back() -> None:
    node = _node()
    ras = fraction_to_ras(node, 0.25, 0.5)
    assert np.allclose(ras, (100.0 - 0.5 * 100, -80.0 + 0.5 * 150, 12.0))  # y flips: fy 0.5 -> 150 px from the bottom
    assert np.allclose(ras_to_fraction(node, ras), (0.25, 0.5))
    a, b = drag_to_ras(node, Drag(0.1, 0.9, 0.3, 0.2))
    assert a[2] == b[2] == 12.0 and a[1] < b[1]  # top of the screen is anterior


def test_a_tab_of_another_shape_maps_its_drag_where_it_was_drawn() -> None:
    """Issue 16 item 3: the server view is 400 x 300; a tab showing it at 400 x 600 (the image at full
    width, top-aligned) reports half its height for a point at the image's bottom edge."""
    node = _node()
    same = drag_to_ras(node, Drag(0.1, 0.2, 0.3, 0.8))
    tall = drag_to_ras(node, Drag(0.1, 0.1, 0.3, 0.4, 400, 600))
    assert np.allclose(same, tall)
    assert np.allclose(drag_to_ras(node, Drag(0.1, 0.2, 0.3, 0.8, 800, 600)), same)  # same shape: as is
    with pytest.raises(InputError, match="past the edge"):
        drag_to_ras(node, Drag(0.1, 0.2, 0.3, 0.7, 400, 600))  # below the image this tab shows


def test_bad_drags_are_refused() -> None:
    with pytest.raises(InputError, match="no size"):
        drag_to_ras(_node(), Drag(0.4, 0.4, 0.4005, 0.6))
    for bad in ([0.1, 0.2, 0.3], ["a", 0, 0, 0], [0, 0, float("nan"), 1], None):
        with pytest.raises(InputError, match="four numbers"):
            Drag.parse(bad)
    with pytest.raises(InputError, match="past the edge of the view"):
        Drag.parse([-0.2, 0.5, 0.6, 0.7])  # issue 16 item 7: not clipped and accepted
    assert Drag.parse([-0.005, 0.5, 1.004, 0.7]) == Drag(0.0, 0.5, 1.0, 0.7)  # a hair past the edge is clamped


def test_bind_policy() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "x" * 16)
    with pytest.raises(InputError, match="--token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(InputError, match="at least"):
        check_bind("127.0.0.1", "short")


def _statuses(token: str | None, cases: list[dict]) -> list[int]:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text="page")

    async def run() -> list[int]:
        app = web.Application(middlewares=[access_middleware(token)])
        app.router.add_get("/index.html", page)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            out = []
            for headers in cases:
                r = await client.get("/index.html", headers=headers, allow_redirects=False)
                out.append(r.status)
            return out

    return asyncio.run(run())


def test_access_rules_without_token() -> None:
    assert _statuses(None, [{}, {"Host": "evil.example"}, {"Origin": "http://evil.example"},
                            {"Host": "localhost:1234", "Origin": "http://localhost:1234"}]) == [200, 403, 403, 200]


def test_access_rules_with_token() -> None:
    t = "t" * 20
    assert _statuses(t, [{}, {"Authorization": f"Bearer {t}"}, {"Cookie": f"musclesam_token={t}"},
                         {"Cookie": "musclesam_token=" + "u" * 20}, {"Host": "10.1.2.3:8080", "Authorization": f"Bearer {t}"}]) \
        == [401, 200, 200, 401, 200]


def test_zip_is_whole_or_absent(tmp_path: Path) -> None:
    from MuscleSAMLib.outputs.bundle import REQUIRED_FILES
    from MuscleSAMLib.web.bundle_zip import zip_bundle

    folder = tmp_path / "case-corrected"
    folder.mkdir()
    (folder / REQUIRED_FILES[0]).write_text("x")
    with pytest.raises(InputError, match="incomplete"):
        zip_bundle(folder, tmp_path / "case.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case-corrected"]  # no zip, no temp file
    for name in REQUIRED_FILES:
        (folder / name).write_text(name)
    out = zip_bundle(folder, tmp_path / "case.zip")
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(f"case-corrected/{n}" for n in REQUIRED_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case-corrected", "case.zip"]
