import threading


def work(box, n):
    total = 0
    for i in range(n):
        total += i
    box.append(total)


def main():
    box = []
    t = threading.Thread(target=work, args=(box, 3))
    # start and join on one line: the main thread's next event comes after the worker's
    # events, so the golden trace does not depend on thread scheduling.
    t.start(); t.join()  # noqa: E702
    # A second thread, started after the first ended, usually gets its ident: it is a thread
    # of its own (thread_id 2), not the first one again.
    u = threading.Thread(target=work, args=(box, 2))
    u.start(); u.join()  # noqa: E702
    return box
