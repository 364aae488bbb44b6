"""ONNX Runtime's default logger is one per process: sessions made at once on several threads (each
silencing it while a named provider may fail to load) must not set it back under each other."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from runtime.session import ORT_DEFAULT_LOGGER_SEVERITY, _ort_default_logger_quiet


def test_overlapping_sessions_keep_the_logger_quiet_until_the_last_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(ort, "set_default_logger_severity", calls.append)
    first, second = _ort_default_logger_quiet(True), _ort_default_logger_quiet(True)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert calls == [4]  # the second session is still being made: its provider's failure stays quiet
    second.__exit__(None, None, None)
    assert calls == [4, ORT_DEFAULT_LOGGER_SEVERITY]


def test_a_session_with_default_providers_leaves_the_logger_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(ort, "set_default_logger_severity", calls.append)
    with _ort_default_logger_quiet(False):
        pass
    assert calls == []


def test_the_logger_is_set_back_when_making_the_session_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(ort, "set_default_logger_severity", calls.append)
    with pytest.raises(RuntimeError, match="no session"), _ort_default_logger_quiet(True):
        raise RuntimeError("no session")
    assert calls == [4, ORT_DEFAULT_LOGGER_SEVERITY]
    with _ort_default_logger_quiet(True):  # the count went back to 0: the next one silences again
        pass
    assert calls == [4, ORT_DEFAULT_LOGGER_SEVERITY, 4, ORT_DEFAULT_LOGGER_SEVERITY]
