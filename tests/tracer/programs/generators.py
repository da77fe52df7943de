def counter(limit):
    count = 0
    while count < limit:
        received = yield count
        if received is not None:
            count = received
        count += 1
    return "done"


def delegate():
    result = yield from counter(2)
    return result


def main():
    gen = counter(10)
    first = next(gen)
    jumped = gen.send(7)
    gen.close()
    collected = list(delegate())
    return first, jumped, collected
