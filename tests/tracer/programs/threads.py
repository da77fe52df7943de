import threading


def work(box, n):
    total = 0
    for i in range(n):
        total += i
    box.append(total)


def main():
    box = []
    t = threading.Thread(target=work, args=(box, 3))
    t.start()
    t.join()
    return box
