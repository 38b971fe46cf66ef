#!/usr/bin/env python3
"""cr_threads.py FILE NTHREADS INTERVAL_MS - threads with their own counters.

Each thread i appends "T<i> <n>" (n = 0, 1, 2...) to FILE through one
O_APPEND descriptor, one line every INTERVAL_MS.  After a stop-mode
checkpoint and a restore every thread's numbers must go on without a gap
or a repeat.
"""
import os
import sys
import threading
import time


def worker(fd, i, interval):
    n = 0
    while True:
        os.write(fd, b"T%d %d\n" % (i, n))
        n += 1
        time.sleep(interval)


def main():
    path, nthreads, ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # what the test harness left open (its logs): CRIU would restore it too
    # and refuses a file whose size changed since the dump
    os.closerange(3, 1024)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    threads = [threading.Thread(target=worker, args=(fd, i, ms / 1000.0), daemon=True)
               for i in range(nthreads)]
    for t in threads:
        t.start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
