import sys

args = sys.argv[1:]
words = [w.upper() for w in args]
print(" ".join(words))
if not words:
    raise SystemExit(3)
