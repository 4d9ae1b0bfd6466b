"""Cancel at random points: every run is all-or-nothing, and the machinery is usable afterwards.

Scenarios (each one row under entry point "cancel" in the bad-input table, passing only if all of its
trials passed):

* Segment and Propagate on the scene bridge (real MRML through slicer-core, a random-weight ensemble
  whose encoder and decoder are slowed down so that cancels land mid-run; half of the trials also
  queue the run behind a worker hold, as the browser tests' ``hold_worker`` does). A "front end" polls
  the job like the web app and presses Cancel after a random delay. Afterwards: either the run
  completed and the scene equals an uninterrupted run's, or it was cancelled and the scene is exactly
  as before (node IDs, every volume's voxels, the segmentation's voxels and statuses), the job's
  ``state`` says which, the bridge is idle, the worker thread is the same live thread, no thread was
  added, and (after a cancel) the same run started again equals the uninterrupted run.
* Cancel landing as propagation starts (deterministic): reported as cancelled, not as an error.
* Cancel after the worker finished but before finish() (deterministic): nothing is written, and the
  Cancel frees the bridge even if the front end never calls finish().
* The engine's Segmenter.precompute on its own worker, cancelled at a random time: the cache holds
  only complete embeddings (equal to an uninterrupted precompute's, a prefix of the slice order),
  and the next precompute completes.
* Learning from corrections interrupted at a random point (a random stage of learn(), then a random
  delay) the way the runner's SIGTERM does it (the CLI's handler raises KeyboardInterrupt at whatever
  line is running; here a signal handler raises in-process, far cheaper than a subprocess per trial):
  the manifest either gained one complete entry (every file present with its checksum) or the weights
  folder is byte-for-byte unchanged, with no member file, temp file or work folder left. Then learning
  into the same folder (under the same name) still succeeded. The narrowest window (the manifest just
  written, the "published" flag not yet set) is made deterministic: the new entry keeps its files.
* The background runner (learning_runner) lets a job that is already publishing finish (a fake job:
  cheap), and the real runner (a subprocess, ~10 s per trial) cancelled at a random stage ends in a
  state that agrees with the manifest: only when MUSCLESAM_CANCEL_TRIALS is set (N // 3 trials).

Trials per scenario: MUSCLESAM_CANCEL_TRIALS (default 3; e.g. ``MUSCLESAM_CANCEL_TRIALS=40`` for a
soak run); seed: MUSCLESAM_CANCEL_SEED. Every failure message names the trial, its delay and the seed.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import random
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch

from bad_input_table import record
from musclesam_test_helpers import import_declared, scene_state, write_random_decoder_ensemble

slicer = import_declared("slicer", "slicer-core")

from MuscleSAMLib.engine import propagation  # noqa: E402
from MuscleSAMLib.engine.embedding_cache import EmbeddingCache  # noqa: E402
from MuscleSAMLib.engine.segmenter import Segmenter  # noqa: E402
from MuscleSAMLib.engine.types import BoxPrompt  # noqa: E402
from MuscleSAMLib.engine.worker import CancelledByUser, PersistentWorker  # noqa: E402
from MuscleSAMLib.scene_bridge import geometry as G  # noqa: E402
from MuscleSAMLib.scene_bridge import logic as logic_module  # noqa: E402
from MuscleSAMLib.scene_bridge import segments as S  # noqa: E402
from MuscleSAMLib.scene_bridge.headless import headless_scene  # noqa: E402
from MuscleSAMLib.scene_bridge.jobs import Cancelled  # noqa: E402
from MuscleSAMLib.scene_bridge.logic import MuscleSAMLogic  # noqa: E402
from MuscleSAMLib.scene_bridge.mrml import VOLUME_ATTR  # noqa: E402
from MuscleSAMLib.volumes import volume_from_array  # noqa: E402

TRIALS = max(1, int(os.environ.get("MUSCLESAM_CANCEL_TRIALS", "3")))
SEED = int(os.environ.get("MUSCLESAM_CANCEL_SEED", "20261125"))
RUNNER_TRIALS = int(os.environ.get("MUSCLESAM_CANCEL_TRIALS", "0"))
ENTRY = "cancel"
SHAPE = (3, 48, 48)
BOXES = [BoxPrompt(3, 1, (12, 14, 36, 38), "VL box"), BoxPrompt(2, 2, (4, 4, 20, 20), "RF box"),
         BoxPrompt(3, 0, (12, 14, 36, 38), "VL box below")]
START = BoxPrompt(3, 1, (12, 14, 36, 38), "VL start")
SLOW_ENCODE_S, SLOW_DECODE_S = 0.03, 0.01  # the "slowed member": enough for cancels to land mid-run


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def logic(tmp_path_factory):
    lg = MuscleSAMLogic()
    lg.load_ensemble("random-test", write_random_decoder_ensemble(tmp_path_factory.mktemp("ens"), members=2, seed=5), "cpu")
    yield lg
    lg.shutdown()


@pytest.fixture
def slowed(logic, monkeypatch):
    """The loaded ensemble's encoder and decoder each sleep a little first (a slow member)."""
    ens = logic.loaded.ensemble
    encode, decode, decode_crops = ens.encode, ens.decode, ens.decode_crops

    def slow(fn: Callable, seconds: float) -> Callable:
        @functools.wraps(fn)
        def run(*a, **k):
            time.sleep(seconds)
            return fn(*a, **k)
        return run

    monkeypatch.setattr(ens, "encode", slow(encode, SLOW_ENCODE_S))
    monkeypatch.setattr(ens, "decode", slow(decode, SLOW_DECODE_S))
    monkeypatch.setattr(ens, "decode_crops", slow(decode_crops, SLOW_DECODE_S))
    return ens


@pytest.fixture
def relaxed_propagation(monkeypatch):
    """Propagation that accepts the random ensemble's uncertain masks (the stop rules are tested elsewhere)."""
    monkeypatch.setattr(logic_module, "propagate_box",
                        functools.partial(propagation.propagate, max_mean_uncertainty=1.0, max_uncertainty_jump=1.0,
                                          min_expected_dsc=-math.inf, min_iou_pred=-math.inf, max_area_ratio=math.inf))


# ---------------------------------------------------------------------------------------------- scene helpers
def _fresh_case(logic: MuscleSAMLogic) -> tuple[Any, Any, Any, Any]:
    """A new scene: the volume, its muscle segmentation with a user paint (VM on slice 0); sessions and
    embedding cache dropped, so the run encodes again."""
    h = headless_scene()
    arr = np.random.default_rng(0).uniform(10, 100, SHAPE).astype(np.float32)
    arr[:, 14:38, 12:36] += 150.0
    volume = G.add_volume_node(h.scene, volume_from_array(arr, (1.0, 1.0, 4.0)), "water")
    seg = S.new_segmentation(volume)
    seg.SetAttribute("MuscleSAM.Role", "segmentation")
    seg.SetAttribute(VOLUME_ATTR, volume.GetID())
    painted = np.zeros(SHAPE, np.uint8)
    painted[0, 2:10, 30:44] = 5
    S.write_changes(seg, volume, np.zeros(SHAPE, np.uint8), painted)
    logic.use_ensemble(logic.loaded)
    return h, h.scene, volume, seg


_scene_state = scene_state


def _result_view(state: dict) -> dict:
    """What an uninterrupted run determines: everything but the node IDs' order of creation."""
    return {key: value for key, value in state.items() if " " in key}


def _threads() -> set[threading.Thread]:
    """Live threads, except tqdm's process-wide monitor (started once, on the first visible bar)."""
    return {t for t in threading.enumerate() if type(t).__name__ != "TMonitor"}


@contextmanager
def _trial(what: str, n: int, delay: float) -> Iterator[None]:
    """Name the trial (and how to replay it) in any assertion raised inside."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{what}, trial {n}, cancel after {delay * 1000:.0f} ms (seed {SEED}): {exc}") from exc


def _drive(logic: MuscleSAMLogic, job: Any, cancel_after: float) -> tuple[str, bool]:
    """Poll ``job`` like the web app; press Cancel ``cancel_after`` s in (if the job is still busy then).

    Returns (outcome 'completed' or 'cancelled', whether Cancel was pressed before finish())."""
    started = time.perf_counter()
    pressed = False
    while not job.done():
        if not pressed and time.perf_counter() - started >= cancel_after:
            logic.cancel()
            pressed = True
        time.sleep(0.005)
    if not pressed and time.perf_counter() - started >= cancel_after:
        logic.cancel()  # the click arrives after the worker ended, before the front end finished the job
        pressed = True
    try:
        job.finish()
        outcome = "completed"
    except Cancelled:
        outcome = "cancelled"
    if not pressed:
        logic.cancel()  # a click after the run was written: nothing to cancel, nothing may change
    return outcome, pressed


def _delays(rng: random.Random, span: float) -> list[tuple[float, float]]:
    """(cancel delay, worker hold) per trial. Trial 0 is cancelled while queued behind a hold (a cancel
    surely lands); the others are stratified over 0..1.25 x the uninterrupted run's duration ``span``
    (early, middle, late, and after the end), half of them queued behind a random hold."""
    out = [(rng.uniform(0.0, 0.05), 0.3)]
    for n in range(1, TRIALS):
        lo, hi = (n - 1) / max(TRIALS - 1, 1), n / max(TRIALS - 1, 1)
        out.append((rng.uniform(lo, hi) * 1.25 * span, rng.uniform(0.0, 0.3 * span) if rng.random() < 0.5 else 0.0))
    return out


def _run_bridge_trials(logic: MuscleSAMLogic, start: Callable[[Any, Any, Any], Any], what: str) -> None:
    """The Segment / Propagate scenario: a timed uninterrupted reference run, then TRIALS cancelled ones."""
    rng = random.Random(f"{SEED}-{what}")
    h, scene, volume, seg = _fresh_case(logic)
    t0 = time.perf_counter()
    reference = start(logic, volume, seg)
    assert reference.wait(timeout=60)
    span = time.perf_counter() - t0
    reference.finish()
    expected = _result_view(_scene_state(scene))
    scene.Clear(1)
    worker_thread = logic.worker.thread
    for n, (delay, hold) in enumerate(_delays(rng, span)):
        with _trial(what, n, delay):
            h, scene, volume, seg = _fresh_case(logic)
            threads, before = _threads(), _scene_state(scene)
            if hold:
                logic.worker.submit(lambda cancel, s=hold: cancel.wait(s))  # a slow item queued first
            job = start(logic, volume, seg)
            assert logic.busy and job.state in ("running", "succeeded")
            outcome, pressed = _drive(logic, job, delay)
            assert job.finished and job.done() and not logic.busy
            assert job.state == ("succeeded" if outcome == "completed" else "cancelled"), (outcome, job.state)
            assert outcome == "cancelled" or not pressed, "Cancel was pressed before finish() but the run was written"
            assert n > 0 or outcome == "cancelled", "a run queued behind a hold was not cancelled"
            if outcome == "cancelled":
                assert _scene_state(scene) == before, "a cancelled run changed the scene"
            else:
                assert _result_view(_scene_state(scene)) == expected, "a completed run differs from the uninterrupted one"
            assert worker_thread.is_alive() and logic.worker.thread is worker_thread
            assert _threads() == threads, f"threads added: {_threads() - threads}"
            if outcome == "cancelled":  # the worker is still usable: the same run again, uninterrupted
                again = start(logic, volume, seg)
                assert again.wait(timeout=60)
                again.finish()
                assert _result_view(_scene_state(scene)) == expected, "the run after a cancel differs from the uninterrupted one"
            scene.Clear(1)


# ---------------------------------------------------------------------------------------------- bridge
def test_segment_cancelled_at_random_points(logic, slowed):
    with record(ENTRY, f"Segment run, cancel after a random delay ({TRIALS} trials)"):
        _run_bridge_trials(logic, lambda lg, vol, seg: lg.start_segment(vol, BOXES, seg), "segment")


def test_propagate_cancelled_at_random_points(logic, slowed, relaxed_propagation):
    with record(ENTRY, f"Propagate run, cancel after a random delay ({TRIALS} trials)"):
        _run_bridge_trials(logic, lambda lg, vol, seg: lg.start_propagate(vol, START, seg, direction=1, max_steps=1),
                           "propagate")


def test_cancel_as_propagation_starts_is_a_cancel(logic, monkeypatch):
    """The walk sees the cancel before its first slice and keeps nothing: that is a cancel, not an
    error ("propagation found nothing to keep ...")."""
    real = propagation.propagate

    def cancelled_at_start(*a, **k):
        logic.cancel()  # the user's click lands just as the worker starts the walk
        return real(*a, **k)

    monkeypatch.setattr(logic_module, "propagate_box", cancelled_at_start)
    with record(ENTRY, "cancel as propagation starts"):
        h, scene, volume, seg = _fresh_case(logic)
        before = _scene_state(scene)
        job = logic.start_propagate(volume, START, seg)
        assert job.wait(timeout=60)
        with pytest.raises(Cancelled, match="propagation cancelled; the scene was not changed"):
            job.finish()
        assert job.state == "cancelled" and not logic.busy and _scene_state(scene) == before
        scene.Clear(1)


def test_cancel_after_the_worker_finished_discards_and_frees(logic):
    """A click between the worker's end and finish(): nothing is written, and a job a front end lost
    (never finished) is closed by Cancel instead of keeping the bridge busy for ever."""
    with record(ENTRY, "cancel after the worker finished, before finish()"):
        h, scene, volume, seg = _fresh_case(logic)
        before = _scene_state(scene)
        job = logic.start_segment(volume, BOXES[:1], seg)
        assert job.wait(timeout=60) and job.state == "succeeded" and logic.busy
        logic.cancel()
        assert not logic.busy and job.finished and job.state == "cancelled"
        with pytest.raises(Cancelled):
            job.finish()
        assert _scene_state(scene) == before
        assert logic.segment(volume, BOXES[:1], seg).changed_labels == [3]  # usable again at once
        scene.Clear(1)


# ---------------------------------------------------------------------------------------------- engine
def test_precompute_cancelled_at_random_points(logic, slowed):
    rng = random.Random(f"{SEED}-precompute")
    image = np.random.default_rng(1).uniform(0, 200, (6, 48, 48)).astype(np.float32)
    order = [3, 4, 2, 5, 1]  # centre 3, radius 2
    worker = PersistentWorker("cancel-test-worker")
    try:
        def segmenter() -> Segmenter:
            return Segmenter(slowed, image, "pre", cache=EmbeddingCache(), worker=worker)

        ref = segmenter()
        t0 = time.perf_counter()
        assert ref.precompute(3, radius=2)[0].result(timeout=60) == order
        span = time.perf_counter() - t0
        expected = {k: ref.cache.get(ref._cache_key(k, None)) for k in order}
        with record(ENTRY, f"Segmenter.precompute, cancel after a random delay ({TRIALS} trials)"):
            for n in range(TRIALS):
                delay = rng.uniform(n / TRIALS, (n + 1) / TRIALS) * 1.2 * span  # stratified over the run
                with _trial("precompute", n, delay):
                    threads = _threads()
                    seg = segmenter()
                    future, cancel = seg.precompute(3, radius=2)
                    time.sleep(delay)
                    if rng.random() < 0.5:
                        cancel.set()  # this item's own event
                    else:
                        seg.cancel()  # everything on the worker
                    try:
                        done = future.result(timeout=60)
                    except CancelledByUser:
                        done = None
                    cached = [k for k in order if seg._cache_key(k, None) in seg.cache]
                    assert done is None or done == order == cached
                    assert cached == order[:len(cached)], f"cached slices {cached} are not a prefix of {order}"
                    for k in cached:  # complete embeddings only, equal to the uninterrupted ones
                        emb, geo = seg.cache.get(seg._cache_key(k, None))
                        assert torch.equal(emb, expected[k][0]) and geo == expected[k][1]
                    again, _ = seg.precompute(3, radius=2)
                    assert again.result(timeout=60) == order
                    for k in order:
                        assert torch.equal(seg.cache.get(seg._cache_key(k, None))[0], expected[k][0])
                    assert worker.thread.is_alive() and _threads() == threads
    finally:
        worker.shutdown()


# ---------------------------------------------------------------------------------------------- learning
TINY = {"like": "demo_xs", "name": "tiny-cancel", "encoder_embed_dim": 32, "encoder_depth": 1, "encoder_num_heads": 2,
        "encoder_global_attn_indexes": [0], "img_size": 64, "patch_size": 8, "window_size": 0,
        "prompt_embed_dim": 32, "decoder_depth": 1, "decoder_mlp_dim": 64, "decoder_num_heads": 2,
        "iou_head_hidden_dim": 32, "mask_in_chans": 8}


@pytest.fixture(scope="module")
def learning_inputs(tmp_path_factory) -> dict:
    """A tiny random decoder ensemble and one corrections bundle of a phantom."""
    from MuscleSAMLib.outputs.bundle import write_bundle
    from MuscleSAMLib.models.architectures import ArchSpec
    from MuscleSAMLib.phantoms import make_thigh_phantom
    from MuscleSAMLib.volumes import read_volume, write_like

    d = tmp_path_factory.mktemp("learn")
    manifest = write_random_decoder_ensemble(d / "w", members=2, arch=ArchSpec.from_dict(TINY),
                                             prompt_geometry="box_crop", box_mask_prompt=True)
    ph = make_thigh_phantom(seed=0, shape=(2, 64, 96), muscles=(1, 2, 3))
    ref = volume_from_array(ph.water.astype(np.float32), spacing=(1.5, 1.5, 6.0))
    image = d / "water.nii.gz"
    write_like(ph.water.astype(np.float32), ref, image)
    prediction = ph.labels.copy()
    prediction[:, :, :40] = 0  # the model missed one leg; the user painted it back
    bundle = write_bundle(d / "bundle", read_volume(image), ph.labels, prediction=prediction,
                          provenance={"ensemble": "random-test"})
    return {"dir": d, "weights": manifest.parent, "bundle": bundle}


class _Interrupted(BaseException):
    """What the CLI's SIGTERM handler raises (KeyboardInterrupt there; its own class here, for pytest)."""


def _listing(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _no_evaluation(module: Any) -> None:
    """Skip the before/after evaluation (for runs whose evaluation is not what is tested: faster)."""
    module.evaluate_pair = lambda plan, spec, progress, span, out=None: []


LEARNING_STAGES = ("load", "embed", "train", "write", "evaluate", "publish")  # learn()'s progress stages


def _learning_trial(inputs: dict, folder: Path, name: str, at: tuple[str, float] | None,
                    patch: Callable[[Any], None] | None = None) -> str:
    """One learning run adding ``name`` to the weights copy in ``folder`` (made on first use),
    interrupted ``at`` = (stage, seconds after learn() reported that stage) (None: never); checks
    all-or-nothing and returns 'completed', 'interrupted' or 'interrupted after publishing'."""
    from MuscleSAMLib.corrections import learning
    from MuscleSAMLib.models.manifest import load_manifest
    from MuscleSAMLib.models.safe_load import sha256_file

    weights = folder / "w"
    if not weights.exists():
        shutil.copytree(inputs["weights"], weights)
    manifest = weights / "manifest.json"
    plan = learning.plan_learning([inputs["bundle"]], "random-test", manifest, out=folder / "run", steps=2, name=name)
    before = _listing(weights)
    armed = threading.Event()
    armed.set()
    main = threading.main_thread().ident

    def handler(signum, frame):
        if armed.is_set():
            armed.clear()
            raise _Interrupted

    reached = threading.Event()

    def progress(fraction: float, stage: str, message: str) -> None:
        if at is not None and stage == at[0]:
            reached.set()

    def killer(stop: threading.Event) -> None:
        if at is None:
            return
        while not reached.wait(0.01):
            if stop.is_set():
                return
        if not stop.wait(at[1]) and armed.is_set():
            signal.pthread_kill(main, signal.SIGUSR1)

    stop = threading.Event()
    old = signal.signal(signal.SIGUSR1, handler)
    thread = threading.Thread(target=killer, args=(stop,), name="learning-interrupter")
    saved = dict(vars(learning))
    outcome = "completed"
    try:
        thread.start()
        if patch is not None:
            patch(learning)
        learning.learn(plan, progress)
    except _Interrupted:
        outcome = "interrupted"
    finally:
        armed.clear()
        stop.set()
        thread.join()
        signal.signal(signal.SIGUSR1, old)
        for key in ("publish", "evaluate_pair"):
            setattr(learning, key, saved[key])
    entries = {e.name: e for e in load_manifest(manifest).ensembles}
    leftovers = [str(p) for p in folder.rglob("*") if p.name.startswith((".tmp-", ".learning-work", ".write-test-", ".run.staging-"))]
    assert not leftovers, f"partial files left: {leftovers}"
    if name in entries:  # published: complete, every file there with its checksum
        for f in entries[name].files:
            assert f.path.is_file() and sha256_file(f.path) == f.sha256, f"{f.path} missing or changed"
        assert outcome == "interrupted" or (folder / "run" / "learning_report.json").is_file()
        return "completed" if outcome == "completed" else "interrupted after publishing"
    assert _listing(weights) == before, "weights folder changed (partial manifest or member files)"
    assert outcome == "interrupted", "learn() returned without publishing"
    return outcome


def test_learning_interrupted_at_random_points(learning_inputs):
    rng = random.Random(f"{SEED}-learning")
    root = learning_inputs["dir"] / "random"
    stages = rng.sample(LEARNING_STAGES, min(TRIALS, len(LEARNING_STAGES)))
    stages += [rng.choice(LEARNING_STAGES) for _ in range(TRIALS - len(stages))]
    with record(ENTRY, f"learning from corrections, interrupted at a random point ({TRIALS} trials)"):
        outcome, folder, name = "", root, ""
        for n, stage in enumerate(stages):
            delay = rng.uniform(0.0, 0.3)
            with _trial(f"learning, {stage} stage", n, delay):
                threads = _threads()
                folder, name = root / f"trial-{n}", f"trial-{n}"
                outcome = _learning_trial(learning_inputs, folder, name, (stage, delay))
                assert _threads() == threads
        # still usable: learning again into the last trial's folder (the same name, unless it was published)
        again = name if outcome == "interrupted" else name + "-again"
        assert _learning_trial(learning_inputs, folder, again, None, _no_evaluation) == "completed"
    assert not list(root.rglob(".learning-work-*"))


def test_learning_interrupted_just_after_publishing(learning_inputs):
    """The narrowest window, made deterministic: the manifest has been replaced, the flag not yet set."""
    def patch(module: Any) -> None:
        real = module.publish

        def publish_then_interrupt(plan, spec):
            real(plan, spec)
            raise _Interrupted

        _no_evaluation(module)
        module.publish = publish_then_interrupt

    with record(ENTRY, "learning interrupted just after the manifest was written"):
        _learning_trial(learning_inputs, learning_inputs["dir"] / "after-publish", "after-publish", None, patch)


def test_runner_lets_a_publishing_job_finish(tmp_path):
    """Cancel once the job reported 'publish': it is let finish (a signal there could cut the manifest
    write or report a published ensemble as cancelled); before that, Cancel stops it."""
    import sys
    import textwrap

    from MuscleSAMLib.corrections.learning_runner import LearningHandle

    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        stage = sys.argv[1]
        print('@@progress {"fraction": 0.98, "stage": "%s", "message": "adding it"}' % stage, flush=True)
        time.sleep(0.5)
        print('@@result {"name": "new"}', flush=True)
    """))
    with record(ENTRY, "learning runner: Cancel while publishing lets it finish"):
        for stage, expected in (("publish", "succeeded"), ("train", "cancelled")):
            seen: list[str] = []
            h = LearningHandle([sys.executable, str(script), stage], on_progress=lambda p: seen.append(p.stage))
            t0 = time.time()
            while not seen and time.time() - t0 < 30:
                time.sleep(0.01)
            h.cancel(grace=10.0)
            assert h.state == expected, (stage, h.state, h.returncode)
            assert (h.result == {"name": "new"}) == (expected == "succeeded") and h.cancelled == (expected == "cancelled")


@pytest.mark.skipif(RUNNER_TRIALS < 1, reason="real subprocess runs (~10 s each): set MUSCLESAM_CANCEL_TRIALS")
def test_learning_runner_cancelled_at_a_random_stage(learning_inputs):
    from MuscleSAMLib.corrections.learning_runner import start_learning
    from MuscleSAMLib.models.manifest import load_manifest
    from MuscleSAMLib.models.safe_load import sha256_file

    rng = random.Random(f"{SEED}-runner")
    stages = ("check", "load", "embed", "train", "write", "evaluate", "publish")
    with record(ENTRY, f"learning runner (subprocess), cancel at a random stage ({max(1, RUNNER_TRIALS // 3)} trials)"):
        for n in range(max(1, RUNNER_TRIALS // 3)):
            stage, delay = rng.choice(stages), rng.uniform(0.0, 0.1)
            with _trial(f"runner at {stage}", n, delay):
                trial = learning_inputs["dir"] / f"runner-{n}"
                weights = Path(shutil.copytree(learning_inputs["weights"], trial / "w"))
                before = _listing(weights)
                seen: list[str] = []
                h = start_learning([learning_inputs["bundle"]], "random-test", manifest=weights / "manifest.json",
                                   out=trial / "run", steps=2, threads=1, name=f"runner-{n}",
                                   on_progress=lambda p: seen.append(p.stage))
                t0 = time.time()
                while stage not in seen and h.running and time.time() - t0 < 120:
                    time.sleep(0.01)
                time.sleep(delay)
                h.cancel(grace=10.0)
                assert not h.running and h.state in ("succeeded", "cancelled"), (h.state, h.error)
                entries = {e.name: e for e in load_manifest(weights / "manifest.json").ensembles}
                assert (f"runner-{n}" in entries) == (h.state == "succeeded"), f"state {h.state} but the manifest says otherwise"
                if h.state == "succeeded":
                    assert all(sha256_file(f.path) == f.sha256 for f in entries[f"runner-{n}"].files)
                else:
                    assert _listing(weights) == before and h.cancelled and h.error == "cancelled"
                assert not [p for p in trial.rglob(".*") if p.name.startswith((".tmp-", ".learning-work-"))]
