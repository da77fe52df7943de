"""The CPU-bound workloads the tracer benchmarks trace (benchmarks/tracer_overhead.py, big_traces.py).

They run from a file of their own (the tracer's scope is the program's file), so they are kept as
source text.
"""

WORKLOADS_SOURCE = '''
def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def bubble_sort(n):
    xs = list(range(n, 0, -1))
    for i in range(len(xs)):
        for j in range(len(xs) - 1 - i):
            if xs[j] > xs[j + 1]:
                xs[j], xs[j + 1] = xs[j + 1], xs[j]
    return xs[:3]


def word_count(n):
    words = ("alpha beta gamma delta alpha beta alpha " * n).split()
    counts = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    return counts


def sieve(n):
    flags = [True] * (n + 1)
    primes = []
    for i in range(2, n + 1):
        if flags[i]:
            primes.append(i)
            for k in range(i * i, n + 1, i):
                flags[k] = False
    return len(primes)


def matmul(n):
    a = [[i + j for j in range(n)] for i in range(n)]
    b = [[i - j for j in range(n)] for i in range(n)]
    c = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            s = 0
            for k in range(n):
                s += a[i][k] * b[k][j]
            c[i][j] = s
    return c[0][0]


def string_build(n):
    out = ""
    for i in range(n):
        if i % 3 == 0:
            out += "fizz"
        else:
            out += str(i)
    return len(out)


def collatz(n):
    longest = 0
    for start in range(1, n):
        x = start
        steps = 0
        while x != 1:
            x = x // 2 if x % 2 == 0 else 3 * x + 1
            steps += 1
        longest = max(longest, steps)
    return longest
'''
