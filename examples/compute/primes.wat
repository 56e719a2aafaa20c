;; primes.wat: a CPU-bound job.
;;
;; Reads a whole number N from stdin and prints "N COUNT\n", COUNT being how
;; many primes are below N, found by trial division (deliberately slow: the
;; point is to keep one CPU busy).  Deterministic: no clock, no randomness.
;;
;;   peerctl run examples/compute/primes.wat --stdin n.txt
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0..8 an iovec, 8..12 a byte count, 16..64 number formatting, 1024.. input

  (func $read_number (result i64)
    (local $n i32) (local $i i32) (local $c i32) (local $v i64)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (local.set $n (i32.load (i32.const 8)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 48))
                     (i32.le_u (local.get $c) (i32.const 57)))
          (then
            (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10))
                                   (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48))))))
          (else (br_if $done (i64.ne (local.get $v) (i64.const 0)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $v))

  ;; writes $v in decimal just before $end; returns where the digits start
  (func $format (param $v i64) (param $end i32) (result i32)
    (local $p i32)
    (local.set $p (local.get $end))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i64.store8 (local.get $p) (i64.add (i64.const 48) (i64.rem_u (local.get $v) (i64.const 10))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $v) (i64.const 0))))
    (local.get $p))

  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func $count_primes (param $n i64) (result i64)
    (local $k i64) (local $d i64) (local $count i64) (local $prime i32)
    (local.set $k (i64.const 2))
    (block $out
      (loop $each
        (br_if $out (i64.ge_u (local.get $k) (local.get $n)))
        (local.set $prime (i32.const 1))
        (local.set $d (i64.const 2))
        (block $no_more
          (loop $divide
            (br_if $no_more (i64.gt_u (i64.mul (local.get $d) (local.get $d)) (local.get $k)))
            (if (i64.eqz (i64.rem_u (local.get $k) (local.get $d)))
              (then (local.set $prime (i32.const 0)) (br $no_more)))
            (local.set $d (i64.add (local.get $d) (i64.const 1)))
            (br $divide)))
        (local.set $count (i64.add (local.get $count) (i64.extend_i32_u (local.get $prime))))
        (local.set $k (i64.add (local.get $k) (i64.const 1)))
        (br $each)))
    (local.get $count))

  (func (export "_start")
    (local $n i64) (local $p i32)
    (local.set $n (call $read_number))
    (i32.store8 (i32.const 63) (i32.const 10))
    (local.set $p (call $format (call $count_primes (local.get $n)) (i32.const 63)))
    (local.set $p (i32.sub (local.get $p) (i32.const 1)))
    (i32.store8 (local.get $p) (i32.const 32))
    (local.set $p (call $format (local.get $n) (local.get $p)))
    (call $write (local.get $p) (i32.sub (i32.const 64) (local.get $p)))))
