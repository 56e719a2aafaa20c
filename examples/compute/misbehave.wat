;; misbehave.wat: a job that misbehaves on purpose, to see the sandbox at work.
;;
;; Its first argument says how:
;;   loop   spins forever                      -> fuel-exhausted (or timeout)
;;   bomb   grows and touches memory forever    -> memory-limit
;;   trap   divides by zero                     -> trap
;;   flood  writes to stdout forever            -> output-too-large
;;   exit   exits with status 3                 -> exit (peerctl run exits 3)
;;   peek   looks for the environment, a preopened directory, /etc/passwd
;;          and a socket, and prints what it got (nothing: 0 variables and
;;          errno 8, "bad file descriptor", for the rest)
;;
;;   peerctl run examples/compute/misbehave.wat loop --fuel 1000000000
(module
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept"
    (func $sock_accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; 0..8 an iovec, 8..16 results, 16..64 number formatting,
  ;; 256..512 argv pointers, 512..1024 argv strings, 1024.. texts, 4096.. a flood buffer
  (data (i32.const 1024) "usage: misbehave loop|bomb|trap|flood|exit|peek\n")  ;; 48
  (data (i32.const 1088) "environment variables: ")                           ;; 23
  (data (i32.const 1120) "preopened fd 3: errno ")                             ;; 22
  (data (i32.const 1152) "open /etc/passwd: errno ")                           ;; 24
  (data (i32.const 1184) "accept on fd 3: errno ")                             ;; 22
  (data (i32.const 1216) "/etc/passwd")                                        ;; 11
  (data (i32.const 1232) "\n")

  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))

  (func $print_number (param $v i32)
    (local $p i32)
    (local.set $p (i32.const 64))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digit (local.get $v)))
    (drop (call $write (i32.const 1) (local.get $p) (i32.sub (i32.const 64) (local.get $p)))))

  (func $line (param $text i32) (param $len i32) (param $number i32)
    (drop (call $write (i32.const 1) (local.get $text) (local.get $len)))
    (call $print_number (local.get $number))
    (drop (call $write (i32.const 1) (i32.const 1232) (i32.const 1))))

  ;; the first byte of argv[1], or 0 without one
  (func $mode (result i32)
    (drop (call $args_sizes_get (i32.const 8) (i32.const 12)))
    (if (i32.lt_u (i32.load (i32.const 8)) (i32.const 2)) (then (return (i32.const 0))))
    (if (i32.gt_u (i32.load (i32.const 8)) (i32.const 64)) (then (return (i32.const 0))))
    (if (i32.gt_u (i32.load (i32.const 12)) (i32.const 512)) (then (return (i32.const 0))))
    (drop (call $args_get (i32.const 256) (i32.const 512)))
    (i32.load8_u (i32.load (i32.const 260))))

  (func $loop (loop $forever (br $forever)))

  (func $bomb
    (local $at i32) (local $end i32)
    (loop $grow
      (local.set $at (memory.grow (i32.const 16)))
      (if (i32.eq (local.get $at) (i32.const -1)) (then unreachable))
      (local.set $at (i32.mul (local.get $at) (i32.const 65536)))
      (local.set $end (i32.add (local.get $at) (i32.const 1048576)))
      (loop $touch  ;; one byte in every 4 KiB, so the pages are really used
        (i32.store8 (local.get $at) (i32.const 1))
        (local.set $at (i32.add (local.get $at) (i32.const 4096)))
        (br_if $touch (i32.lt_u (local.get $at) (local.get $end))))
      (br $grow)))

  (func $trap (param $zero i32) (result i32)
    (i32.div_u (i32.const 1) (local.get $zero)))

  (func $flood
    (loop $more
      (drop (call $write (i32.const 1) (i32.const 4096) (i32.const 16384)))
      (br $more)))

  (func $peek
    (drop (call $environ_sizes_get (i32.const 8) (i32.const 12)))
    (call $line (i32.const 1088) (i32.const 23) (i32.load (i32.const 8)))
    (call $line (i32.const 1120) (i32.const 22)
      (call $fd_prestat_get (i32.const 3) (i32.const 8)))
    (call $line (i32.const 1152) (i32.const 24)
      (call $path_open (i32.const 3) (i32.const 0) (i32.const 1216) (i32.const 11)
        (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 8)))
    (call $line (i32.const 1184) (i32.const 22)
      (call $sock_accept (i32.const 3) (i32.const 0) (i32.const 8))))

  (func (export "_start")
    (local $mode i32)
    (local.set $mode (call $mode))
    (if (i32.eq (local.get $mode) (i32.const 108)) (then (call $loop)))           ;; l
    (if (i32.eq (local.get $mode) (i32.const 98)) (then (call $bomb)))            ;; b
    (if (i32.eq (local.get $mode) (i32.const 116))                                ;; t
      (then (drop (call $trap (i32.const 0)))))
    (if (i32.eq (local.get $mode) (i32.const 102)) (then (call $flood)))          ;; f
    (if (i32.eq (local.get $mode) (i32.const 101)) (then (call $proc_exit (i32.const 3))))  ;; e
    (if (i32.eq (local.get $mode) (i32.const 112)) (then (call $peek) (return)))  ;; p
    (drop (call $write (i32.const 2) (i32.const 1024) (i32.const 48)))
    (call $proc_exit (i32.const 2))))
