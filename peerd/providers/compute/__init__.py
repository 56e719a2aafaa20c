"""The compute provider: peers lend processing power to run sandboxed WebAssembly jobs."""
