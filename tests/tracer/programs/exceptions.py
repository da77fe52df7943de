class AppError(Exception):
    pass


def parse(text):
    try:
        return int(text)
    except ValueError as exc:
        raise AppError(f"not a number: {text}") from exc
    finally:
        parsed = True  # noqa: F841  (a finally-block line to trace)


def main(items):
    results = []
    for item in items:
        try:
            results.append(parse(item))
        except AppError as err:
            results.append(str(err))
    return results
