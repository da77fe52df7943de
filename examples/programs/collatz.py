"""Print the Collatz sequences of a few numbers and the longest one."""


def collatz(n):
    steps = [n]
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps.append(n)
    return steps


longest = []
for start in range(1, 8):
    sequence = collatz(start)
    if len(sequence) > len(longest):
        longest = sequence
    print(start, len(sequence))
print("longest:", longest)
