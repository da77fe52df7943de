def main(n):
    squares = [i * i for i in range(n)]
    table = {k: v for k, v in zip("abc", squares)}
    evens = {x for x in squares if x % 2 == 0}
    total = sum(x for x in squares)
    return squares, table, sorted(evens), total
