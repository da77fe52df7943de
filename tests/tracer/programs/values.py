def main():
    big = list(range(500))
    text = "x" * 3000
    huge = 7 ** 20000
    odd = "\udcff lone surrogate"
    raw = bytes(range(256))
    floats = [float("nan"), float("inf"), -0.0]
    nested = [[[[[[[[[["deep"]]]]]]]]]]
    del huge
    return len(big), len(text), odd, raw[:4], floats, nested
