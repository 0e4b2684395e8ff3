"""Ctrl-C after coverage runs printed a KeyboardInterrupt traceback from every worker
process: the terminal signals the whole foreground group. Workers leave it to the parent."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from concurrent.futures import Future
from typing import Any

import pytest

from camera_registry.planning.runs import process_pool


def _result(future: Future[Any]) -> Any:
    try:
        return future.result(timeout=30)
    except KeyboardInterrupt:  # the worker's, carried back: it must not end this test run
        pytest.fail("a coverage worker took the Ctrl-C meant for its parent")


def test_ctrl_c_reaching_coverage_workers_leaves_them_quiet_and_working(
    capfd: pytest.CaptureFixture[str],
) -> None:
    pool = process_pool(2)
    try:
        # two tasks at once start both workers; once they answer, both are initialised
        warm = [pool.submit(time.sleep, 0.5) for _ in range(2)]
        assert [f.result(timeout=60) for f in warm] == [None, None]
        workers = multiprocessing.active_children()
        assert len(workers) == 2
        busy = [pool.submit(time.sleep, 1.5) for _ in range(2)]  # both workers mid-task
        time.sleep(0.5)
        for w in workers:
            assert w.pid is not None
            os.kill(w.pid, signal.SIGINT)
        assert [_result(f) for f in busy] == [None, None]  # tasks finish
        for w in workers:  # and again while idle, waiting for work
            assert w.pid is not None
            os.kill(w.pid, signal.SIGINT)
        time.sleep(0.3)
        assert _result(pool.submit(sum, [1, 2, 3])) == 6  # the pool is not broken
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
