import asyncio
import contextlib


def suppressed():
    with contextlib.suppress(KeyError):
        {}[1]
    return "suppressed"


def reraised():
    try:
        raise ValueError(1)
    finally:
        cleanup = 2  # noqa: F841  (a finally line to trace)


def return_in_finally():
    try:
        1 / 0  # noqa: B018
    finally:
        return 3  # noqa: B012


def thrower():
    try:
        yield 1
    except KeyError:
        yield 2


async def failing():
    raise KeyError(1)


async def awaiting():
    try:
        await failing()
    except KeyError:
        return 1


def main(n):
    results = [suppressed()]
    try:
        reraised()
    except ValueError:
        results.append("reraised")
    results.append(return_in_finally())
    it = thrower()
    next(it)
    results.append(it.throw(KeyError))
    results.append(asyncio.run(awaiting()))
    xs = [3, 1, 2]
    xs.sort(key=lambda v: -v)
    while n > 0: n -= 1  # noqa: E701
    results.append((xs, n))
    return results
