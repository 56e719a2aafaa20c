"""
The sandbox, through the real job runner: each job in a forked process
under fuel, memory, output and OS limits, with WAT modules.
"""

from __future__ import annotations

import time
from pathlib import Path

from runner_helpers import MiB, RunnerClient

from peerd.providers.compute import reasons


def test_primes_and_wordcount_give_the_right_answers(runner: RunnerClient) -> None:
    """The examples work: 9592 primes below 100000; wc-style counts of a text."""
    done, out = runner.run(runner.compile("primes"), stdin=b"100000\n")
    assert done["result"]["reason"] == reasons.OK and out == b"100000 9592\n"
    text = b"one two  three\nfour\n\nfive six\n"
    done, out = runner.run(runner.compile("wordcount"), stdin=text)
    assert out == b"4 6 %d\n" % len(text)
    assert done["cpu"] > 0 and done["result"]["fuel_used"] > 0


def test_infinite_loop_is_stopped_by_fuel(runner: RunnerClient) -> None:
    """An endless loop ends with fuel-exhausted once its fuel is gone, well before its timeout."""
    compiled = runner.compile("misbehave")
    started = time.monotonic()
    done, _ = runner.run(compiled, "loop", fuel=200_000_000, timeout=30)
    elapsed = time.monotonic() - started
    assert done["result"]["reason"] == reasons.FUEL
    assert done["result"]["fuel_used"] == 200_000_000
    assert elapsed < 10
    print(f"\ninfinite loop with 2e8 fuel stopped after {elapsed:.3f} s")


def test_infinite_loop_with_ample_fuel_is_killed_at_the_timeout(runner: RunnerClient) -> None:
    """With fuel to spare, the wall-clock limit kills the job process."""
    compiled = runner.compile("misbehave")
    started = time.monotonic()
    done, _ = runner.run(compiled, "loop", fuel=10**14, timeout=0.5)
    assert done["result"]["reason"] == reasons.TIMEOUT
    assert 0.5 <= time.monotonic() - started < 5


def test_memory_bomb_is_stopped_by_the_memory_limit(runner: RunnerClient) -> None:
    """A job growing and touching memory ends with memory-limit; its process stays near the limit."""
    done, _ = runner.run(runner.compile("misbehave"), "bomb", memory=64 * MiB)
    assert done["result"]["reason"] == reasons.MEMORY
    assert done["max_rss"] < 64 * MiB + 96 * MiB
    print(f"\nmemory bomb (limit 64 MiB): worker peak RSS {done['max_rss'] / MiB:.1f} MiB")


def test_a_job_gets_no_environment_no_files_no_sockets(runner: RunnerClient) -> None:
    """No environment variables, no preopened directory, no file, no socket: EBADF (8) for all."""
    done, out = runner.run(runner.compile("misbehave"), "peek")
    assert done["result"]["reason"] == reasons.OK
    assert out == (
        b"environment variables: 0\n"
        b"preopened fd 3: errno 8\n"
        b"open /etc/passwd: errno 8\n"
        b"accept on fd 3: errno 8\n"
    )


def test_output_over_the_limit_is_cut(runner: RunnerClient) -> None:
    """A flood of output ends the job with output-too-large, the output cut at the limit."""
    done, out = runner.run(runner.compile("misbehave"), "flood", max_output=100_000)
    assert done["result"]["reason"] == reasons.OUTPUT
    assert len(out) == 100_000


def test_trap_and_exit_status(runner: RunnerClient) -> None:
    """A division by zero is a trap; proc_exit(3) is exit with code 3."""
    compiled = runner.compile("misbehave")
    done, _ = runner.run(compiled, "trap")
    assert done["result"]["reason"] == reasons.TRAP
    assert "divide by zero" in done["result"]["detail"]
    done, _ = runner.run(compiled, "exit")
    assert (done["result"]["reason"], done["result"]["exit_code"]) == (reasons.EXIT, 3)


def test_bad_modules_fail_to_compile(runner: RunnerClient, tmp_path: Path) -> None:
    """Garbage, a module importing the host's functions, or one with no _start: compile-error."""
    cases = {
        "garbage.wasm": b"\0asm\x01\0\0\0garbage",
        "imports.wat": b'(module (import "env" "system" (func)) (func (export "_start")))',
        "nostart.wat": b'(module (func (export "main")))',
    }
    for name, data in cases.items():
        source = tmp_path / name
        source.write_bytes(data)
        done = runner.compile_result(source)
        assert done["result"]["reason"] == reasons.COMPILE, name


def test_jobs_run_in_their_own_processes(runner: RunnerClient) -> None:
    """Each job is a fresh process: a crashed one does not affect the next."""
    compiled = runner.compile("misbehave")
    runner.run(compiled, "bomb", memory=16 * MiB)
    done, out = runner.run(runner.compile("primes"), stdin=b"1000")
    assert out == b"1000 168\n"
