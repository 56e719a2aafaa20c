;; empty.wat: does nothing, at once.  Measures what running a job costs.
(module
  (memory (export "memory") 1)
  (func (export "_start")))
