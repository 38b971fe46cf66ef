#!/usr/bin/python3
"""phos-threads.py N DELAY_MS: a multi-threaded task for the checkpoint tests.

Four worker threads each bump their own counter; the main thread prints
"count K sum S" for K = 1..N every DELAY_MS, where S is the workers' total:
a restart from scratch shows as a second "count 1", a lost thread as a
sum that stops growing.  Ends with "done N".
"""
import os
import sys
import threading
import time

n, delay = int(sys.argv[1]), int(sys.argv[2]) / 1000.0
counts = [0] * 4
stop = False


def work(i):
    while not stop:
        counts[i] += 1
        time.sleep(0.001)


threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(4)]
for t in threads:
    t.start()
for k in range(1, n + 1):
    os.write(1, ("count %d sum %d alive %d\n" % (k, sum(counts),
                 sum(t.is_alive() for t in threads))).encode())
    time.sleep(delay)
stop = True
for t in threads:
    t.join()
os.write(1, ("done %d\n" % n).encode())
