"""
What runs inside a job's own process: compile a module, or run one job
under wasmtime with its limits, and say how it ended.

Only :mod:`peerd.providers.compute.runner` calls this, in a freshly forked
child that has already dropped its file descriptors and set its OS limits
(:func:`apply_rlimits`).  A job sees its arguments, its stdin (a file) and
its stdout/stderr (counted, capped); no environment, no preopened
directory, no socket.  Time is wasmtime fuel (instructions) here and a
wall-clock deadline in the runner.
"""

from __future__ import annotations

import json
import os
import resource
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from peerd.disk import write_atomically
from peerd.providers.compute import reasons

PAGE = 65536
"""A WebAssembly memory page."""
GUARD = 2 * 1024 * 1024
"""Guard region after each linear memory (bytes)."""
AS_SLACK = 512 * 1024 * 1024
"""Address space allowed on top of the interpreter, the memory reservation and its guard."""
MAX_DETAIL = 1000
"""Characters of a trap or compile message kept in a result."""


def engine_config(reservation: int) -> wasmtime.Config:
    """
    The one engine configuration of a worker: fuel metering on, and linear
    memory reserved up to ``reservation`` bytes (the worker's memory cap),
    so the address-space limit of a job process can be tight.  Compiled
    modules depend on it (see :func:`config_tag`).
    """
    config = wasmtime.Config()
    config.consume_fuel = True
    config.memory_reservation = reservation
    config.memory_reservation_for_growth = 0
    config.memory_guard_size = GUARD
    config.parallel_compilation = False
    return config


def apply_rlimits(*, address_space: int, cpu_seconds: int, file_size: int) -> None:
    """
    OS limits on the current process, in defence of the sandbox: address
    space, CPU seconds (SIGXCPU, then SIGKILL one second later), the size of
    any file it writes, no core dumps, few descriptors.
    """
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def address_space_for(reservation: int) -> int:
    """The RLIMIT_AS of a job process: what it maps now plus its memory reservation."""
    return _mapped_bytes() + reservation + GUARD + AS_SLACK


def _mapped_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 30


def _detail(error: BaseException) -> str:
    text = str(error).strip()
    return text[:MAX_DETAIL]


# -- compiling ------------------------------------------------------------------------------


def compile_module(source: Path, dest: Path, reservation: int) -> dict:
    """
    Compile ``source`` (WebAssembly binary or text) and write the compiled
    artifact to ``dest`` (through a temporary name); the result says ``ok``
    or ``compile-error`` with the compiler's message.
    """
    engine = wasmtime.Engine(engine_config(reservation))
    data = source.read_bytes()
    try:
        module = wasmtime.Module(engine, data if data[:4] == b"\0asm" else data.decode("utf-8"))
    except (wasmtime.WasmtimeError, UnicodeDecodeError) as e:
        return {"reason": reasons.COMPILE, "detail": _detail(e)}
    bad = [f"{i.module}.{i.name}" for i in module.imports if i.module != "wasi_snapshot_preview1"]
    if bad:
        detail = f"imports what a job may not have: {', '.join(bad[:5])}"
        return {"reason": reasons.COMPILE, "detail": detail}
    if not any(e.name == "_start" for e in module.exports):
        return {"reason": reasons.COMPILE, "detail": "exports no _start function (a WASI command)"}
    write_atomically(dest, module.serialize(), replace=True)
    return {"reason": reasons.OK}


# -- running ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """One job, as the runner hands it to a job process (paths are the worker's)."""

    compiled: str
    input: str | None
    output: str
    stderr: str
    args: tuple[str, ...]
    fuel: int
    memory: int
    timeout: float
    max_output: int
    max_stderr: int
    reservation: int
    nice: int = 0

    @classmethod
    def from_json(cls, data: dict) -> JobSpec:
        """From the runner's ``run`` message."""
        return cls(
            compiled=str(data["compiled"]),
            input=None if data.get("input") is None else str(data["input"]),
            output=str(data["output"]),
            stderr=str(data["stderr"]),
            args=tuple(str(a) for a in data.get("args", ())),
            fuel=int(data["fuel"]),
            memory=int(data["memory"]),
            timeout=float(data["timeout"]),
            max_output=int(data["max_output"]),
            max_stderr=int(data["max_stderr"]),
            reservation=int(data["reservation"]),
            nice=int(data.get("nice", 0)),
        )


class _CappedOutput:
    """A WASI output stream into a file descriptor that stops at ``limit`` bytes."""

    def __init__(self, fd: int, limit: int, on_overflow: object = None) -> None:
        self.fd = fd
        self.limit = limit
        self.written = 0
        self.on_overflow = on_overflow

    def __call__(self, data: bytes) -> int:
        room = self.limit - self.written
        if len(data) > room:
            if room > 0:
                _write_all(self.fd, data[:room])
                self.written += room
            if self.on_overflow is not None:
                self.on_overflow()  # does not return
            return len(data)  # stderr: drop the rest quietly
        _write_all(self.fd, data)
        self.written += len(data)
        return len(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_engines: dict[int, wasmtime.Engine] = {}


def engine_for(reservation: int) -> wasmtime.Engine:
    """
    The engine for ``reservation``, made once per process.  The runner makes
    it before forking (creating an engine starts no thread), so each job
    process starts with it ready.
    """
    engine = _engines.get(reservation)
    if engine is None:
        engine = _engines[reservation] = wasmtime.Engine(engine_config(reservation))
    return engine


@dataclass
class Prepared:
    """What a job process makes ready before it knows its job."""

    engine: wasmtime.Engine
    linker: wasmtime.Linker
    mapped: int
    """Bytes of address space mapped before the job's own memory."""


def prepare(reservation: int) -> Prepared:
    """Make the engine's linker (WASI defined) and measure the address space in use."""
    engine = engine_for(reservation)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    return Prepared(engine, linker, _mapped_bytes())


def run_job(spec: JobSpec, report: object, prepared: Prepared | None = None) -> dict:
    """
    Run one job to its end and return its result (``reason``,
    ``exit_code``, ``fuel_used``, ``output_bytes``, ``detail``).

    ``report(result)`` is called (and the process exits) instead of
    returning when the job overflows its output: that happens inside a
    WASI write, where unwinding through wasmtime is not possible.
    """
    prepared = prepared or prepare(spec.reservation)
    engine = prepared.engine
    out_fd = os.open(spec.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err_fd = os.open(spec.stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    store = wasmtime.Store(engine)
    stdout = _CappedOutput(out_fd, spec.max_output)

    def overflow() -> None:
        report(
            {
                "reason": reasons.OUTPUT,
                "exit_code": None,
                "fuel_used": spec.fuel - _fuel_left(store, spec.fuel),
                "output_bytes": stdout.written,
                "detail": f"the job wrote more than {spec.max_output} bytes to stdout",
            }
        )

    stdout.on_overflow = overflow
    stderr = _CappedOutput(err_fd, spec.max_stderr)
    wasi = wasmtime.WasiConfig()
    wasi.argv = ["job", *spec.args]
    if spec.input is not None:
        wasi.stdin_file = spec.input
    wasi.stdout_custom = stdout
    wasi.stderr_custom = stderr
    store.set_wasi(wasi)
    store.set_fuel(spec.fuel)
    store.set_limits(memory_size=spec.memory)
    result: dict = {"exit_code": None}
    try:
        module = wasmtime.Module.deserialize_file(engine, spec.compiled)
    except wasmtime.WasmtimeError as e:
        return {**result, "reason": reasons.COMPILE, "detail": _detail(e)}
    linker = prepared.linker
    instance = None
    try:
        instance = linker.instantiate(store, module)
        start = instance.exports(store)["_start"]
        start(store)
        result.update(reason=reasons.OK, exit_code=0)
    except wasmtime.ExitTrap as e:
        result.update(reason=reasons.OK if e.code == 0 else reasons.EXIT, exit_code=e.code)
    except wasmtime.Trap as e:
        if e.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
            result.update(reason=reasons.FUEL, detail=f"used all {spec.fuel} fuel")
        else:
            result.update(reason=reasons.TRAP, detail=_detail(e))
    except wasmtime.WasmtimeError as e:
        result.update(reason=reasons.TRAP, detail=_detail(e))
    if instance is None and result["reason"] != reasons.OK:
        # instantiation failed: a memory minimum over the limit is the usual cause
        if "memory" in result.get("detail", "") and "limit" in result.get("detail", ""):
            result["reason"] = reasons.MEMORY
    elif result["reason"] not in (reasons.OK,) and _memory_full(store, instance, spec.memory):
        result.update(
            reason=reasons.MEMORY,
            detail=f"linear memory reached the {spec.memory}-byte limit; "
            + str(result.get("detail") or result["reason"]),
        )
    result["fuel_used"] = spec.fuel - _fuel_left(store, spec.fuel)
    result["output_bytes"] = stdout.written
    return result


def _fuel_left(store: wasmtime.Store, default: int) -> int:
    try:
        return store.get_fuel()
    except wasmtime.WasmtimeError:
        return 0


def _memory_full(store: wasmtime.Store, instance: object, limit: int) -> bool:
    """
    Whether an exported linear memory ended near the limit: a job that fails
    there most likely failed to grow it (wasmtime's ``memory.grow`` returns -1
    at the limit rather than trapping, and a job usually traps or exits next).
    """
    if instance is None:
        return False
    for export in instance.exports(store).by_index:  # type: ignore[attr-defined]
        if isinstance(export, wasmtime.Memory) and export.data_len(store) + _margin(limit) > limit:
            return True
    return False


def _margin(limit: int) -> int:
    """How close to the limit a memory counts as full: an eighth of it, at least a page."""
    return max(PAGE, limit // 8)


def encode_result(result: dict) -> bytes:
    """A result as the job process hands it to the runner."""
    return json.dumps(result).encode("utf-8")
