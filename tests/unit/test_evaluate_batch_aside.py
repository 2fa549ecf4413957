"""The test split's batch run beside the validation replay: its lines held back until collected, its error
raised there, and a failed validation stops it rather than waiting for it (a sleeping subprocess stands in for
`tandem batch run`; the real run beside a real replay: tests/integration/test_model_evaluate_cli.py)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.evaluate import EvaluationError
from pipelines.batch import evaluation
from tandem.settings import Settings


def _fake_batch_path(seconds: float, fail: bool = False, delay: float = 0.0):
    def batch_path(settings, dataset_dir, split, log, started=None):
        time.sleep(delay)
        proc = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
        if started is not None:
            started(proc)
        log(f"batch run as of {split}")
        if proc.wait() != 0:
            raise EvaluationError(f"the evaluation's batch run failed (exit {proc.returncode})")
        if fail:
            raise EvaluationError("the evaluation's batch run: no champion")
        return {"as_of": split}

    return batch_path


def test_lines_are_held_back_until_collected(monkeypatch, tmp_path):
    monkeypatch.setattr(evaluation, "_batch_path", _fake_batch_path(0.2))
    aside = evaluation._BatchPathAside(Settings(home=tmp_path), Path(tmp_path), 42.0)
    time.sleep(0.5)
    logged: list[str] = []
    assert aside.collect(logged.append) == {"as_of": 42.0}
    assert logged == ["batch run as of 42.0"]


def test_its_error_is_raised_when_collected(monkeypatch, tmp_path):
    monkeypatch.setattr(evaluation, "_batch_path", _fake_batch_path(0.1, fail=True))
    aside = evaluation._BatchPathAside(Settings(home=tmp_path), Path(tmp_path), 1.0)
    logged: list[str] = []
    with pytest.raises(EvaluationError, match="no champion"):
        aside.collect(logged.append)
    assert logged == ["batch run as of 1.0"]  # what it printed is shown with the error


def test_stop_ends_the_run_instead_of_waiting(monkeypatch, tmp_path):
    monkeypatch.setattr(evaluation, "_batch_path", _fake_batch_path(60))
    aside = evaluation._BatchPathAside(Settings(home=tmp_path), Path(tmp_path), 1.0)
    time.sleep(0.5)  # the subprocess has started
    began = time.perf_counter()
    aside.stop()
    assert time.perf_counter() - began < 10
    assert aside._proc is not None and aside._proc.returncode is not None and aside._proc.returncode != 0


def test_stop_before_the_subprocess_starts_ends_it_as_it_starts(monkeypatch, tmp_path):
    monkeypatch.setattr(evaluation, "_batch_path", _fake_batch_path(60, delay=0.5))
    aside = evaluation._BatchPathAside(Settings(home=tmp_path), Path(tmp_path), 1.0)
    began = time.perf_counter()
    aside.stop()  # the run is still preparing its workspace
    assert time.perf_counter() - began < 10
    assert aside._proc is not None and aside._proc.returncode is not None and aside._proc.returncode != 0
