;; wordcount.wat: a text filter, like `wc`.
;;
;; Reads stdin to its end and prints "LINES WORDS BYTES\n".  A word is a
;; run of bytes other than space, tab, newline, carriage return, vertical
;; tab and form feed.  Deterministic.
;;
;;   peerctl run examples/compute/wordcount.wat --stdin book.txt
;;   peerctl map examples/compute/wordcount.wat books/*.txt -o counts/
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0..8 an iovec, 8..12 a byte count, 16..128 the answer, 65536.. a 64 KiB buffer

  (func $format (param $v i64) (param $end i32) (result i32)
    (local $p i32)
    (local.set $p (local.get $end))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i64.store8 (local.get $p) (i64.add (i64.const 48) (i64.rem_u (local.get $v) (i64.const 10))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $v) (i64.const 0))))
    (local.get $p))

  (func $is_space (param $c i32) (result i32)
    (i32.or (i32.eq (local.get $c) (i32.const 32))
            (i32.and (i32.ge_u (local.get $c) (i32.const 9))
                     (i32.le_u (local.get $c) (i32.const 13)))))

  (func (export "_start")
    (local $n i32) (local $i i32) (local $c i32) (local $in_word i32)
    (local $lines i64) (local $words i64) (local $bytes i64) (local $p i32)
    (block $eof
      (loop $chunk
        (i32.store (i32.const 0) (i32.const 65536))
        (i32.store (i32.const 4) (i32.const 65536))
        (br_if $eof (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $bytes (i64.add (local.get $bytes) (i64.extend_i32_u (local.get $n))))
        (local.set $i (i32.const 0))
        (block $done
          (loop $byte
            (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $c (i32.load8_u (i32.add (i32.const 65536) (local.get $i))))
            (if (i32.eq (local.get $c) (i32.const 10))
              (then (local.set $lines (i64.add (local.get $lines) (i64.const 1)))))
            (if (call $is_space (local.get $c))
              (then (local.set $in_word (i32.const 0)))
              (else
                (if (i32.eqz (local.get $in_word))
                  (then (local.set $words (i64.add (local.get $words) (i64.const 1)))))
                (local.set $in_word (i32.const 1))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $byte)))
        (br $chunk)))
    (i32.store8 (i32.const 127) (i32.const 10))
    (local.set $p (call $format (local.get $bytes) (i32.const 127)))
    (local.set $p (i32.sub (local.get $p) (i32.const 1)))
    (i32.store8 (local.get $p) (i32.const 32))
    (local.set $p (call $format (local.get $words) (local.get $p)))
    (local.set $p (i32.sub (local.get $p) (i32.const 1)))
    (i32.store8 (local.get $p) (i32.const 32))
    (local.set $p (call $format (local.get $lines) (local.get $p)))
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (i32.sub (i32.const 128) (local.get $p)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
