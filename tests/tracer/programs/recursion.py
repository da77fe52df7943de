def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def main(n):
    memo = {}
    for k in range(n):
        memo[k] = fib(k)
    return memo
